"""One extraction job from start to finish, on one rank of a world of any size.

    take the folder (lock: one job at a time; clean `.tmp-*`, check or write plan.json)
    -> image shards of this rank -> barrier
    -> caption shards of this rank (captions of skipped images left out) -> barrier
    -> checksums spread over the ranks -> rank 0 writes report.json, then manifest.json

Every shard already on disk is skipped, so running the same job again after a crash computes only
what is missing; a job whose manifest is present and current does nothing (`up_to_date`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cache.fingerprint import cheap_part, check_fingerprint, field_value, fingerprint_diff, make_fingerprint
from pipeline.cache.format import MANIFEST, PLAN, missing_shards, shard_path
from pipeline.errors import BadItems, CacheError
from pipeline.extraction import distributed
from pipeline.extraction.directory import take
from pipeline.extraction.distributed import World
from pipeline.extraction.finalize import finalize, skipped_images
from pipeline.extraction.image_runner import extract_images
from pipeline.extraction.plan import ImageItem, TextItem, items_digest, make_plan, my_shards, shard_ranges, check_unique
from pipeline.extraction.text_runner import extract_text
from pipeline.extraction.timing import merge_summaries
from pipeline.io.jsonio import read_json


@dataclass
class TextJob:
    items: list[TextItem]  # sorted by item_id
    encoder: object
    batch_size: int = 128


@dataclass
class ImageJob:
    items: list[ImageItem]  # sorted by image_id
    encoder: object
    images_root: Path
    batch_size: int = 32
    num_workers: int = 2
    policy: BadItems = field(default_factory=BadItems)


@dataclass
class Outcome:
    complete: bool
    up_to_date: bool = False
    deferred_text: list[int] = field(default_factory=list)
    missing: dict = field(default_factory=dict)
    manifest: dict | None = None


def up_to_date(split_dir: Path, cheap_fingerprint: dict, overwrite: bool = False) -> bool:
    """True when a complete cache for this configuration is there (no model needed to tell).

    A plan made with another configuration fails here, before any model is loaded, unless --overwrite."""
    split_dir = Path(split_dir)
    if not (split_dir / PLAN).exists():
        return False
    plan = read_json(split_dir / PLAN)
    found = cheap_part(plan["fingerprint"])
    diffs = fingerprint_diff(cheap_fingerprint, found)
    if diffs:
        if overwrite:
            return False
        shown = ", ".join(f"{d} (cache: {field_value(found, d)!r}, now: {field_value(cheap_fingerprint, d)!r})" for d in diffs[:8])
        raise CacheError(f"file {split_dir / PLAN}: the cache was built with another configuration; "
                         f"fields that differ: {shown} (use another --cache folder, or --overwrite)")
    if not (split_dir / MANIFEST).exists():
        return False
    return not any(missing_shards(split_dir, plan).values())


def run(split_dir: Path, fingerprint: dict, *, text: TextJob | None = None, image: ImageJob | None = None,
        shard_size: int, storage_dtype: str = "float16", shards: list[int] | None = None,
        overwrite: bool = False, world: World | None = None, progress: bool = True,
        skipped_captions: list[dict] | None = None, extra_report: dict | None = None, wait: bool = False) -> Outcome:
    """Extract what is missing. Another job holding the folder is a FolderBusyError naming it, or with `wait`
    is waited for; a job that waited may then find everything done, and returns `up_to_date`."""
    world = world or World()
    split_dir = Path(split_dir)
    if text is not None:
        check_unique([t.item_id for t in text.items], "caption")
    plan = make_plan(fingerprint, [t.item_id for t in text.items] if text else None,
                     [i.image_id for i in image.items] if image else None, shard_size)
    lock = take(split_dir, plan, overwrite=overwrite, leader=True, wait=wait) if world.leader else None
    distributed.barrier()  # followers read the plan only after the leader has cleaned up and written it
    if not world.leader:
        take(split_dir, plan, overwrite=False, leader=False)
    try:
        if (split_dir / MANIFEST).exists() and not any(missing_shards(split_dir, plan).values()):
            return Outcome(complete=True, up_to_date=True, manifest=read_json(split_dir / MANIFEST))
        timings, deferred = {}, []
        if image is not None:
            mine = my_shards(len(plan["shards"]["image"]), world.rank, world.size, shards)
            timings["image"] = extract_images(
                image.items, image.encoder, image.images_root, split_dir, shard_size=shard_size,
                batch_size=image.batch_size, num_workers=image.num_workers, storage_dtype=storage_dtype,
                shards=mine, policy=image.policy, progress=progress and world.leader)
            distributed.barrier()  # captions need every image shard's list of skipped images
        if text is not None:
            mine = my_shards(len(plan["shards"]["text"]), world.rank, world.size, shards)
            drop = frozenset()
            if image is not None:
                drop = frozenset(s["image_id"] for s in skipped_images(split_dir, plan))
                mine, deferred = ready_text_shards(text.items, image.items, split_dir, shard_size, mine)
            timings["text"] = extract_text(text.items, text.encoder, split_dir, shard_size=shard_size,
                                           batch_size=text.batch_size, storage_dtype=storage_dtype, shards=mine,
                                           drop_image_ids=drop, progress=progress and world.leader)
        distributed.barrier()
        gathered = distributed.gather(timings)
        merged = {m: merge_summaries([g.get(m, {}) for g in gathered]) for m in ("text", "image") if m in timings}
        deferred = sorted(set().union(*distributed.gather(deferred)))
        dropped = []
        if text is not None and image is not None:
            gone = {s["image_id"] for s in skipped_images(split_dir, plan)}
            dropped = [t.item_id for t in text.items if t.image_id in gone]
        manifest = finalize(split_dir, plan, world, timings=merged, skipped_captions=list(skipped_captions or []),
                            dropped=dropped, extra=extra_report)
        distributed.barrier()  # nobody leaves (and reads the cache) before the manifest is written
        missing = missing_shards(split_dir, plan)
        return Outcome(complete=not any(missing.values()), deferred_text=deferred, missing=missing,
                       manifest=manifest)
    finally:
        if lock is not None:
            lock.release()


def ready_text_shards(texts: list[TextItem], images: list[ImageItem], split_dir: Path, shard_size: int,
                      wanted: list[int]) -> tuple[list[int], list[int]]:
    """Split wanted caption shards into (ready, deferred): a shard is ready once every image shard
    holding one of its captions' images exists, because only then is it known which captions to drop."""
    ids = [i.image_id for i in images]
    ranges = shard_ranges(len(texts), shard_size)
    ready, deferred = [], []
    for s in wanted:
        if shard_path(split_dir, "text", s).exists():
            continue
        start, stop = ranges[s]
        deps = {bisect.bisect_left(ids, t.image_id) // shard_size for t in texts[start:stop] if t.image_id}
        (ready if all(shard_path(split_dir, "image", d).exists() for d in deps) else deferred).append(s)
    return ready, deferred


def build_text_cache(items: list[TextItem], encoder, split_dir: Path, *, source: dict, shard_size: int = 1024,
                     batch_size: int = 128, storage_dtype: str = "float16", shards: list[int] | None = None,
                     overwrite: bool = False, world: World | None = None, progress: bool = True) -> Outcome:
    """A text-only cache of pre-tokenised items (GLUE sentence pairs, SQuAD windows): the same shards,
    plan, manifest and resumability as captions. `source` names what the items came from (task,
    file digest, pairing/windowing knobs) and goes into the fingerprint."""
    items = sorted(items, key=lambda t: t.item_id)
    fingerprint = make_fingerprint(
        modalities=["text"], split={"source": source, **items_digest(items)}, shard_size=shard_size,
        storage_dtype=storage_dtype, compute_dtype=encoder.compute_dtype,
        text={"model": encoder.name, "layer": encoder.layer, "max_length": encoder.max_length,
              "encoder": encoder.fingerprint()})
    if not overwrite and up_to_date(split_dir, cheap_part(fingerprint)):
        check_fingerprint(split_dir, fingerprint)  # the encoder is loaded anyway: compare its weights too
        return Outcome(complete=True, up_to_date=True, manifest=read_json(Path(split_dir) / MANIFEST))
    return run(split_dir, fingerprint, text=TextJob(items, encoder, batch_size), shard_size=shard_size,
               storage_dtype=storage_dtype, shards=shards, overwrite=overwrite, world=world, progress=progress)

