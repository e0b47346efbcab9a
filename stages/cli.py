"""The `groundedbert` command: one sub-app per area, joined here.

    groundedbert data synth OUT_DIR             make the embedded default dataset
    groundedbert data glue-fixtures OUT_DIR     small GLUE/SQuAD files in the official formats
    groundedbert weights convert                the offline DINOv2 backbone: ONNX -> safetensors
    groundedbert extract ...                    stage one: frozen encoders -> HDF5 cache
    groundedbert cache info|verify DIR          inspect / check a cache
    groundedbert train ...                      stage two: train the MLPs from the cache
    groundedbert evaluate grounding|glue|squad  measure a trained run
"""
from __future__ import annotations

import typer

from pipeline.runtime import keep_freed_memory
from stages import cache_tools, data, downstream, evaluate, extract, train, weights

app = typer.Typer(help="GroundedBERT: frozen-encoder feature cache + grounding module training.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

data.app.command("glue-fixtures", help="Small GLUE and SQuAD files in the official formats.")(downstream.fixtures)
evaluate.app.command("glue", help="GLUE task: a head on h alone vs on h concatenated with f_g(h) (probe or finetune).")(downstream.glue)
evaluate.app.command("squad", help="SQuAD v1.1/v2.0: start/end heads on h alone vs on h concatenated with f_g(h).")(downstream.squad)


@app.callback()
def _every_command() -> None:
    # Before any command: tensors freed by one batch are reused by the next without page faults
    # (pipeline/runtime.py says why: eager image extraction 1.3x faster on a CPU).
    keep_freed_memory()


app.add_typer(data.app, name="data", help="Datasets: synthesise the embedded default, write task fixtures.")
app.add_typer(weights.app, name="weights", help="Offline encoder weights.")
app.command("extract", help="Stage one: run the frozen encoders once and cache their features.")(extract.extract)
app.add_typer(cache_tools.app, name="cache", help="Inspect and verify feature caches.")
app.command("train", help="Stage two: train the grounding module, image projection and matcher from a cache.")(train.train)
app.add_typer(evaluate.app, name="evaluate", help="Evaluate a trained run: grounding, GLUE, SQuAD.")

if __name__ == "__main__":
    app()
