"""The `groundedbert` command: one sub-app per area, joined here.

    groundedbert data synth OUT_DIR             make the embedded default dataset
    groundedbert extract ...                    stage one: frozen encoders -> HDF5 cache
    groundedbert cache info|verify DIR          inspect / check a cache
    groundedbert train ...                      stage two: train the MLPs from the cache
    groundedbert evaluate grounding|glue|squad  measure a trained run
"""
from __future__ import annotations

import typer

from stages import cache_tools, data, evaluate, extract, train

app = typer.Typer(help="GroundedBERT: frozen-encoder feature cache + grounding module training.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data.app, name="data", help="Datasets: synthesise the embedded default.")
app.command("extract", help="Stage one: run the frozen encoders once and cache their features.")(extract.extract)
app.add_typer(cache_tools.app, name="cache", help="Inspect and verify feature caches.")
app.command("train", help="Stage two: train the grounding module, image projection and matcher from a cache.")(train.train)
app.add_typer(evaluate.app, name="evaluate", help="Evaluate a trained run.")

if __name__ == "__main__":
    app()
