"""The `groundedbert` command: one sub-app per area, joined here.

    groundedbert data synth OUT_DIR             make the embedded default dataset
    groundedbert data glue-fixtures OUT_DIR     small GLUE/SQuAD files in the official formats
    groundedbert weights convert                the offline DINOv2 backbone: ONNX -> safetensors
    groundedbert extract ...                    stage one: frozen encoders -> HDF5 cache
    groundedbert cache info|verify DIR          inspect / check a cache
    groundedbert train ...                      stage two: train the MLPs from the cache
    groundedbert evaluate grounding|glue|squad  measure a trained run
    groundedbert export --run RUN --out DIR     a trained run as a folder that loads offline (docs/encoder_api.md)
    groundedbert plots template PATH            the offline HTML template of `dvc plots show`

Each stage module also runs on its own, with the same commands and options, e.g. `python -m stages.train
--cache ... --out ...` or `python -m stages.downstream glue ...` (stages/_common.py: run_module). dvc.yaml
uses those entries: this module imports every stage, so a stage run through it would depend on all the code.
"""
from __future__ import annotations

import typer

from stages import cache_tools, data, downstream, evaluate, export, extract, plots, train, weights
from stages._common import before_every_command

app = typer.Typer(help="GroundedBERT: frozen-encoder feature cache + grounding module training.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

downstream.register(data.app, "glue-fixtures")
downstream.register(evaluate.app, "glue", "squad", "downstream")


@app.callback()
def _every_command() -> None:
    # Before any command: tensors freed by one batch are reused by the next without page faults
    # (pipeline/runtime.py says why). The same helper runs first in every `python -m stages.<name>` entry.
    before_every_command()


app.add_typer(data.app, name="data", help="Datasets: synthesise the embedded default, write task fixtures.")
app.add_typer(weights.app, name="weights", help="Offline encoder weights.")
app.command("extract", help="Stage one: run the frozen encoders once and cache their features.")(extract.extract)
app.add_typer(cache_tools.app, name="cache", help="Inspect and verify feature caches.")
app.command("train", help="Stage two: train the grounding module, image projection and matcher from a cache.")(train.train)
app.command("export", help="A trained run as a folder GroundedEncoder.from_pretrained loads offline.")(export.export)
app.add_typer(evaluate.app, name="evaluate", help="Evaluate a trained run: grounding, GLUE, SQuAD.")
app.add_typer(plots.app, name="plots", help="`dvc plots show` output: the offline HTML template.")

if __name__ == "__main__":
    app()
