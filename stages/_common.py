"""What every entry point shares: friendly errors and the layered configuration options."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.errors import GroundedBertError

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Experiment YAML holding only the keys that differ from params.yaml.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override one key, e.g. --set train.mass=0.3 (repeatable).")]


def friendly_errors(fn):
    """Print a user error (bad file, bad item, stale cache) as one clear line and exit 2, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GroundedBertError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    return wrapper
