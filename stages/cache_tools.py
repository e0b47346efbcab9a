"""`groundedbert cache info DIR` and `groundedbert cache verify DIR`: look at and check a feature cache.

DIR is a split folder (holding plan.json) or a cache root whose subfolders are splits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cache.info import cache_info, find_splits
from pipeline.cache.verify import verify_cache
from pipeline.errors import CacheError
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
        if "fixture" in i:
            typer.echo(f"  NOT A DATASET: {i['fixture']['note']} (seed {i['fixture']['seed']})")
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


@app.command(help="Write a cache of random float16 features in the real format, for benches (not a dataset).")
@friendly_errors
def fixture(
    out: Annotated[Path, typer.Argument(help="New split folder to write (e.g. /tmp/scale/train).")],
    images: Annotated[int, typer.Option(help="Unique images.")],
    captions_per_image: Annotated[int, typer.Option(help="Captions of each image.")] = 5,
    tokens: Annotated[int, typer.Option(help="Mean tokens per caption, [CLS] and [SEP] included.")] = 16,
    text_dim: Annotated[int, typer.Option(help="Width of the token states.")] = 384,
    image_dim: Annotated[int, typer.Option(help="Width of the patch tokens.")] = 384,
    grid: Annotated[int, typer.Option(help="Patch grid side (16 = 256 patches, as ViT-S/14 at 224).")] = 16,
    prefix: Annotated[int, typer.Option(help="Prefix tokens per image (class token first).")] = 1,
    shard_size: Annotated[int, typer.Option(help="Items per shard.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of the random features.")] = 0,
) -> None:
    from pipeline.extraction.scale_fixture import write_scale_fixture

    manifest = write_scale_fixture(out, images=images, captions_per_image=captions_per_image, tokens=tokens,
                                   text_dim=text_dim, image_dim=image_dim, grid=(grid, grid), prefix=prefix,
                                   shard_size=shard_size, seed=seed, log=typer.echo)
    size = sum((out / e["file"]).stat().st_size for m in manifest["shards"].values() for e in m)
    typer.echo(f"{out}: {images} images, {images * captions_per_image} captions, {_size(size)} of random "
               f"features (scale fixture, not a dataset)")


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
