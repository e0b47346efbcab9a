"""`groundedbert plots template PATH`: write the offline HTML template for `dvc plots show`.

setup.sh runs it and .dvc/config points `plots.html_template` at the result (stages/plots_offline.py
says why DVC's default page needs internet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import friendly_errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def plots():
    """HTML output of `dvc plots show`."""


@app.command()
@friendly_errors
def template(path: Annotated[Path, typer.Argument(help="Where to write it, e.g. .dvc/plots/offline.html.")]):
    """Write a `dvc plots show` HTML template with vega, vega-lite and vega-embed inlined (no CDN)."""
    from stages.plots_offline import write_template

    typer.echo(write_template(path))
