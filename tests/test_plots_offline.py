"""`dvc plots show` with the offline template (stages/plots_offline.py) renders in a browser that has
no network: the vega line chart is drawn and the PNG plot is shown. The same page made with DVC's
default (CDN) template stays blank under the same browser, which shows the network really is off."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.plots_offline import PLACEHOLDERS, write_template

REPO = Path(__file__).resolve().parent.parent
LOSS = [1.0, 0.6, 0.4, 0.3]
CDN_SCRIPT = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?https?:""", re.IGNORECASE)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> str:
    return write_template(tmp_path_factory.mktemp("template") / "offline.html").read_text(encoding="utf-8")


def test_template_inlines_vega_and_fills_like_dvc(template):
    from dvc_render.html import HTML

    assert "{plot_divs}" in template and "{scripts}" not in template  # {scripts} is where the CDN tags go
    assert "window.vegaEmbed=" in template and "window.vegaLite=" in template and "window.vega=" in template
    assert "cdn.jsdelivr.net" not in template and not CDN_SCRIPT.search(template)
    # dvc_render fills placeholders with str.replace: the page comes back with the bundle untouched.
    page = HTML(template).with_element("<p>PLOT</p>").embed()
    assert "<p>PLOT</p>" in page and not any(p in page for p in PLACEHOLDERS)
    assert len(page) == len(template) - len("{plot_divs}{refresh_tag}") + len("<p>PLOT</p>")


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def make_project(root: Path) -> Path:
    """git + dvc init, a dvclive-style TSV with a few points and a PNG, both declared under `plots:`."""
    from PIL import Image

    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "plots").mkdir()
    rows = "".join(f"{step}\t{loss}\n" for step, loss in enumerate(LOSS))
    (root / "plots" / "loss.tsv").write_text("step\tloss\n" + rows)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(root / "plots" / "sample.png")
    (root / "dvc.yaml").write_text("plots:\n  - plots/loss.tsv:\n      x: step\n      y: loss\n"
                                   "  - plots/sample.png\n")
    return root


def render_offline(chromium: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium whose every network request fails."""
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           f"--user-data-dir={profile}",
           # No DNS, and any connection that gets past that goes to a proxy port nobody serves.
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, f"{chromium} on {page}:\n{result.stderr[-3000:]}"
    # The inlined bundle in <head> holds markup-like strings of its own: look at the body only.
    return result.stdout.split("<body>", 1)[-1]


def chart_drawn(body: str) -> bool:
    """vega-embed drew the TSV: an svg in the plot's div and a line mark through all the points."""
    div = re.search(r'<div id="plots_loss_tsv"[^>]*>(.*?)(?:<div id="|$)', body, re.DOTALL)
    if not div or '<svg' not in div.group(1):
        return False
    lines = re.findall(r'aria-roledescription="line mark" d="(M[^"]+)"', div.group(1))
    return any(d.count("L") == len(LOSS) - 1 for d in lines)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium, chromium-browser or google-chrome on PATH "
                                                    "(Debian: apt-get install chromium)")
def test_dvc_plots_show_renders_offline(tmp_path, template):
    chromium = find_chromium()
    project = make_project(tmp_path / "project")
    # The path as the repository's .dvc/config holds it: DVC reads it relative to .dvc/.
    configured = dvc(REPO, "config", "--project", "plots.html_template")
    (project / ".dvc" / configured).parent.mkdir(parents=True, exist_ok=True)
    write_template(project / ".dvc" / configured)
    dvc(project, "config", "plots.html_template", configured)

    dvc(project, "plots", "show", "-o", "offline")
    page = project / "offline" / "index.html"
    assert not CDN_SCRIPT.search(page.read_text(encoding="utf-8")), f"{page} loads a script over the network"
    body = render_offline(chromium, page, tmp_path / "profile")
    assert chart_drawn(body), f"{page}: no vega chart with a line mark in the DOM:\n{body[:3000]}"
    img = re.search(r'<img src="([^"]+sample\.png)"', body)
    assert img and (page.parent / img.group(1)).is_file(), f"{page}: no <img> of plots/sample.png:\n{body[:3000]}"

    # Control: DVC's default page needs the CDN, so under the same browser its chart stays blank.
    dvc(project, "config", "--unset", "plots.html_template")
    dvc(project, "plots", "show", "-o", "cdn")
    assert CDN_SCRIPT.search((project / "cdn" / "index.html").read_text(encoding="utf-8"))
    assert not chart_drawn(render_offline(chromium, project / "cdn" / "index.html", tmp_path / "profile"))
