"""What every entry point shares: friendly errors, the layered configuration options, and what runs before
every command, whether entered through `groundedbert` or as `python -m stages.<name>`."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, Optional

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
        except OSError as e:   # a full disk where no DiskFullError was raised: still one line (pipeline/io/disk.py)
            from pipeline.io.disk import free_bytes, is_disk_full

            if not is_disk_full(e):
                raise
            where = Path(e.filename).parent if e.filename else Path.cwd()
            typer.secho(f"error: folder {where}: disk full ({e.strerror}), {free_bytes(where):,} bytes free; free some "
                        "space and run the same command again", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    return wrapper


def before_every_command() -> None:
    """What every command does first, entered as `groundedbert ...` (the callback in stages/cli.py) or as
    `python -m stages.<name> ...` (run_module): keep freed memory for reuse (pipeline/runtime.py says why).
    Imported here, not at the top, so that importing a stage module stays light."""
    from pipeline.runtime import keep_freed_memory

    keep_freed_memory()


def run_module(entry: typer.Typer | Callable[..., object], *, commands: bool = False) -> None:
    """The `__main__` of every stages/<name>.py: `python -m stages.<name> ...` runs that module's commands as
    `groundedbert` runs them (before_every_command() first, the same names and options). dvc.yaml's stages
    use these entries, so each imports, and depends on, only its own code; stages/cli.py imports them all.

    entry: the module's Typer app, or one command function (`python -m stages.train --cache ...`).
    commands: keep the subcommand name of an app holding a single command (`python -m stages.evaluate
    grounding ...`, as `groundedbert evaluate grounding`), which Typer would otherwise run bare.
    """
    if not isinstance(entry, typer.Typer):
        command, entry = entry, typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        entry.command()(command)
    if commands:
        group = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
        group.add_typer(entry)  # no name: its commands join the group as they are
        entry = group
    before_every_command()
    entry()
