"""`groundedbert cache info DIR` and `groundedbert cache verify DIR`: look at and check a feature cache.

DIR is a split folder (holding plan.json) or a cache root whose subfolders are splits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import CacheError
from pipeline.extraction.info import cache_info, find_splits
from pipeline.extraction.verify import verify_cache
from stages._common import friendly_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
DirArg = Annotated[Path, typer.Argument(help="A split folder, or a cache root holding split folders.")]


def _splits(root: Path) -> list[Path]:
    found = find_splits(root)
    if not found:
        raise CacheError(f"file {root}: no feature cache here (no plan.json in it or in its subfolders)")
    return found


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@app.command(help="Print what a cache holds: splits, counts, dims, dtypes, grid, sizes, fingerprint summary.")
@friendly_errors
def info(dir: DirArg) -> None:
    for split_dir in _splits(dir):
        i = cache_info(split_dir)
        state = "complete" if i["complete"] else "INCOMPLETE (rerun the same extract command to finish)"
        typer.echo(f"{i['split']}: {state}  [{i['path']}]")
        typer.echo(f"  format v{i['format_version']}, storage {i['storage_dtype']}, compute {i['compute_dtype']}, "
                   f"shard size {i['shard_size']}")
        ids = i["split_ids"]
        if "captions" in ids:
            typer.echo(f"  split: {ids['captions']} captions, {ids['images']} images "
                       f"(ids sha256 {ids['captions_sha256'][:12]}/{ids['images_sha256'][:12]})")
        for m, r in i["modalities"].items():
            what = (f"model {r['model']} (weights {r['weights_sha256']}...), "
                    + (f"layer {r['layer']}, max_length {r['max_length']}" if m == "text" else f"image_size {r['image_size']}"))
            typer.echo(f"  {m}: {r['shards_done']}/{r['shards']} shards, {_size(r['bytes'])} on disk; {what}")
            if "items" in r:
                if m == "text":
                    typer.echo(f"    {r['items']} captions, {r['tokens']} tokens, dim {r['dim']}, "
                               f"{r['truncated']} truncated")
                else:
                    grid = "x".join(str(g) for g in r.get("grid") or [])
                    cls = "" if r.get("class_token", True) else ", no class token"
                    typer.echo(f"    {r['items']} images, grid {grid} ({r.get('prefix_tokens')} prefix tokens{cls}), "
                               f"dim {r['dim']}, {r['skipped']} skipped")
        if "report" in i:
            rep = i["report"]
            typer.echo(f"  report: {rep['skipped_captions']} captions and {rep['skipped_images']} images skipped, "
                       f"{rep['captions_of_skipped_images']} captions dropped with their image, "
                       f"{rep['truncated_captions']} captions truncated")


@app.command(help="Check every shard against the manifest; exit 1 listing the problems.")
@friendly_errors
def verify(dir: DirArg) -> None:
    bad = False
    for split_dir in _splits(dir):
        problems = verify_cache(split_dir)
        if problems:
            bad = True
            typer.echo(f"FAILED {split_dir}: {len(problems)} problems")
            for p in problems:
                typer.echo(f"  - {p}")
        else:
            typer.echo(f"OK {split_dir}: every shard matches the manifest (checksums, shapes, counts, finite values)")
    if bad:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    from stages._common import run_module

    run_module(app)
