"""An HTML template for `dvc plots show` that renders without internet.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so offline it is a
blank page. This module writes a template (set as `plots.html_template` in .dvc/config) that
carries the three libraries inline, taken from the installed `vl-convert-python` wheel.

How dvc_render 1.x fills a template (dvc_render/html.py): it must contain `{plot_divs}`; it may
contain `{scripts}` and `{refresh_tag}`. Each is filled by plain `str.replace`, not `str.format`,
so the bundle's own braces need no escaping. We leave out `{scripts}` on purpose: that is where the
CDN <script src=...> tags would go. Each vega plot's div runs, in a classic inline script,
`var spec = {...}; vegaEmbed('#id', spec);` while the page is parsed, so `vegaEmbed` must already be
a global by then: a classic script in <head>, not a (deferred) `type="module"` one.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError

PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

# DVC's plot templates declare Vega-Lite v5 specs; use the newest v5 that vl-convert bundles.
VEGA_LITE_MAJOR = "5."

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed}: inlined from vl-convert-python {vlc} -->
    <script type="text/javascript">
(function () {
"use strict";
__BUNDLE__
})();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def vega_bundle() -> tuple[str, dict[str, str]]:
    """The vega + vega-lite + vega-embed script (it sets window.vega/vegaLite/vegaEmbed) and its versions."""
    try:
        import vl_convert as vlc
    except ImportError as e:
        raise ConfigError("the offline plots template needs vl-convert-python (pip install -e '.[pipeline]')") from e
    v5 = [v for v in vlc.get_vegalite_versions() if v.startswith(VEGA_LITE_MAJOR)]
    if not v5:
        raise ConfigError(f"vl-convert-python {vlc.__version__} bundles no Vega-Lite {VEGA_LITE_MAJOR}x "
                          f"(has {vlc.get_vegalite_versions()}), which DVC's plot specs are written for")
    vl_version = max(v5, key=lambda v: tuple(int(p) for p in v.split(".")))
    bundle = vlc.javascript_bundle(vl_version=vl_version)
    # The script is pasted inline: a "</script" in it would end the tag early, and a placeholder in it
    # would be replaced by dvc_render.
    for bad in ("</script", *PLACEHOLDERS):
        if bad in bundle:
            raise ConfigError(f"vl-convert-python {vlc.__version__}: its JavaScript bundle contains {bad!r}, "
                              "so it cannot be inlined into the DVC plots template")
    versions = {"vega": vlc.get_vega_version(), "vega_lite": vl_version,
                "vega_embed": vlc.get_vega_embed_version(), "vlc": vlc.__version__}
    return bundle, versions


def template_html() -> str:
    bundle, versions = vega_bundle()
    # The bundle is an ES module: "use strict" keeps module semantics, and the function scope keeps its
    # thousands of top-level names out of the global scope that DVC's `var spec` scripts share.
    page = PAGE
    for key, value in versions.items():
        page = page.replace("{" + key + "}", value)
    return page.replace("__BUNDLE__", bundle)


def write_template(path: str | Path) -> Path:
    """Write the offline template to `path` (parent folders made) and return the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template_html(), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write the DVC plots template {path}: {e.strerror}") from e
    return path
