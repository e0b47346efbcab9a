"""`groundedbert data synth OUT_DIR`: write the embedded default dataset (the DVC `synth` stage).

Defaults come from params.yaml's `data:` section; --config and --set layer on top, and the explicit
flags below win over both.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve
from pipeline.data.synth import synthesize
from stages._common import ConfigOpt, SetOpt, friendly_errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Datasets: synthesise the embedded default."""
    # A callback makes `data` a command group even with one command, so `data synth OUT` keeps
    # its subcommand name instead of Typer collapsing the app into a single command.


@app.command("synth", help="Generate coloured-shape images with grounded captions (JSONL + PNG + grounding.json).")
@friendly_errors
def synth(
    out_dir: Annotated[Optional[Path], typer.Argument(help="Output folder (default: data.root).")] = None,
    images: Annotated[Optional[int], typer.Option("--images", help="Number of images, all splits together.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed, byte-identical files.")] = None,
    captions_per_image: Annotated[Optional[int], typer.Option("--captions-per-image")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Canvas side in pixels.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", help="scenes (partial captions, asides, held-out synonyms) or simple.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    data = resolve(config, set_ or [])["data"]
    flags = {"images": images, "seed": seed, "captions_per_image": captions_per_image, "image_size": image_size,
             "preset": preset}
    data.update({k: v for k, v in flags.items() if v is not None})
    out = Path(out_dir) if out_dir is not None else Path(data["root"])
    start = time.perf_counter()
    summary = synthesize(out, images=data["images"], captions_per_image=data["captions_per_image"],
                         image_size=data["image_size"], seed=data["seed"],
                         val_fraction=data["val_fraction"], test_fraction=data["test_fraction"],
                         preset=data["preset"], shapes=tuple(data["shapes"]), named=tuple(data["named"]),
                         nonvisual_fraction=data["nonvisual_fraction"],
                         held_out_synonyms=data["held_out_synonyms"])
    splits = ", ".join(f"{name} {c['images']}/{c['captions']}" for name, c in summary["splits"].items())
    typer.echo(f"wrote {summary['images']} images, {summary['captions']} captions "
               f"(images/captions: {splits}) to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    from stages._common import run_module

    run_module(app)
