"""A trained run as a folder anyone can load offline (`groundedbert export`).

    groundedbert export --run runs/default --out exports/default \
        [--pooling mean] [--max-length 128] [--checkpoint best.pt] [--device auto]

Writes OUT/config.json, OUT/model.safetensors (text encoder + f_g), the tokenizer and a model card
(pipeline/grounded/export.py lists the files); `GroundedEncoder.from_pretrained(OUT)` loads it
(docs/encoder_api.md). Pooling and max_length default to params.yaml's downstream section, as the
downstream probe reads them; the encoder, its layer and compute dtype are the run's own. --device is where
the export and its self-check compute (auto = CUDA when there is one); a run extracted in float16 needs a GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve
from stages._common import ConfigOpt, SetOpt, friendly_errors


@friendly_errors
def export(
    run: Annotated[Path, typer.Option(help="Run directory written by `groundedbert train`.")],
    out: Annotated[Path, typer.Option(help="Folder to write (replaced as a whole when it exists).")],
    pooling: Annotated[Optional[str],
                       typer.Option(help="Sentence vector: cls or mean (default: downstream.pooling).")] = None,
    max_length: Annotated[Optional[int],
                          typer.Option(help="Tokens per input (default: downstream.max_length).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best.pt (lowest validation loss) or last.pt.")] = "best.pt",
    device: Annotated[str, typer.Option(help="auto (CUDA when there is one), cpu, cuda, cuda:1, ... "
                                             "A run extracted in float16 needs a GPU.")] = "auto",
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    from pipeline.grounded.export import export_run  # torch and transformers load only when the command runs

    cfg = resolve(config, set or [])["downstream"]
    folder = export_run(run, out, pooling=pooling or cfg["pooling"], max_length=max_length or cfg["max_length"],
                        checkpoint=checkpoint, device=device)
    typer.echo(f"exported {run} to {folder}")


if __name__ == "__main__":
    from stages._common import run_module

    run_module(export)
