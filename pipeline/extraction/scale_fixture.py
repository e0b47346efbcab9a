"""A cache in the real format at any size, with random float16 features and no encoder run: for benches
that need a cache larger than memory, and for small tests of the readers. It is not a dataset.

    write_scale_fixture(Path("/tmp/big/train"), images=150_000, captions_per_image=5)

Every shard is written with the same writers as extraction (`write_text_shard`, `write_image_shard`), then
the manifest by `finalize.build_manifest`, so readers, `cache verify` and training see a normal cache. The
fingerprint carries a `fixture` entry (the seed and a note); `cache info` prints it, so nobody mistakes
its numbers for features. Speed: the features are copied from one pool of random values at a random
offset per image/caption instead of drawn one by one, so a 30 GB cache costs about what the disk writes.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.cache.fingerprint import make_fingerprint
from pipeline.cache.format import MANIFEST, PLAN, REPORT, RUN_LOG, write_image_shard, write_text_shard
from pipeline.errors import ConfigError
from pipeline.extraction.finalize import build_manifest, describe_shard
from pipeline.extraction.plan import make_plan
from pipeline.io.atomic import write_json_atomic

FIXTURE_MODEL = "fixture:random"
NOTE = "random float16 features written by the scale fixture; not a dataset"
POOL_VALUES = 1 << 24   # 32 MiB of float16 from which every row is copied


def fixture_ids(images: int, captions_per_image: int) -> tuple[list[str], list[str], list[str]]:
    """Image ids, caption ids and each caption's image id, all sorted (zero-padded, so text order = numeric)."""
    width = max(7, len(str(images)))
    image_ids = [f"{i:0{width}d}" for i in range(images)]
    kw = len(str(captions_per_image - 1))
    caption_ids = [f"{i}-{k:0{kw}d}" for i in image_ids for k in range(captions_per_image)]
    caption_images = [i for i in image_ids for _ in range(captions_per_image)]
    return image_ids, caption_ids, caption_images


def _ids_digest(ids: list[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode() + b"\n")
    return h.hexdigest()


def fixture_fingerprint(*, images: int, captions: int, image_ids, caption_ids, shard_size: int, tokens: int,
                        text_dim: int, image_dim: int, grid: tuple[int, int], prefix: int, seed: int) -> dict:
    fp = make_fingerprint(
        modalities=["text", "image"], shard_size=shard_size, storage_dtype="float16", compute_dtype="float32",
        split={"captions": captions, "images": images, "captions_sha256": _ids_digest(caption_ids),
               "images_sha256": _ids_digest(image_ids)},
        text={"model": FIXTURE_MODEL, "layer": -1, "max_length": 2 * tokens},
        image={"model": FIXTURE_MODEL, "image_size": 14 * grid[0]})
    fp["fixture"] = {"kind": "scale", "seed": int(seed), "note": NOTE, "mean_tokens": int(tokens),
                     "text_dim": int(text_dim), "image_dim": int(image_dim), "grid": list(grid), "prefix": int(prefix)}
    return fp


class _Pool:
    """Random float16 values; `rows(n, width)` copies n rows of `width` from random offsets."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.values = rng.standard_normal(POOL_VALUES, dtype=np.float32).astype(np.float16)

    def rows(self, n: int, width: int) -> np.ndarray:
        if width > len(self.values):
            raise ConfigError(f"scale fixture: rows of {width} values exceed the pool ({len(self.values)})")
        out = np.empty((n, width), np.float16)
        starts = self.rng.integers(0, len(self.values) - width + 1, size=n)
        for r, s in enumerate(starts):
            out[r] = self.values[s:s + width]
        return out


def _text_shard(pool: _Pool, rng, caption_ids, caption_images, tokens: int, dim: int) -> dict:
    """Captions of 3..2*tokens-3 tokens (mean `tokens`): [CLS], words with character spans, [SEP]."""
    lengths = rng.integers(max(3, tokens - 4), tokens + 5, size=len(caption_ids))
    states = pool.rows(int(lengths.sum()), dim)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    token_ids, spans = [], []
    for n in lengths:
        ids = rng.integers(1000, 30000, size=n, dtype=np.int32)
        sp = np.zeros((n, 2), np.int32)
        sp[1:-1, 0] = np.arange(n - 2) * 5
        sp[1:-1, 1] = sp[1:-1, 0] + 4
        token_ids.append(ids)
        spans.append(sp)
    return {"states": [states[s:e] for s, e in zip(starts, ends)], "token_ids": token_ids, "char_spans": spans,
            "caption_ids": caption_ids, "image_ids": caption_images, "truncated": [False] * len(caption_ids)}


def write_scale_fixture(split_dir: Path, *, images: int, captions_per_image: int = 5, tokens: int = 16,
                        text_dim: int = 384, image_dim: int = 384, grid: tuple[int, int] = (16, 16),
                        prefix: int = 1, shard_size: int = 1024, seed: int = 0,
                        log: Callable[[str], None] | None = None) -> dict:
    """Write a complete split (plan, shards, report, manifest) and return its manifest."""
    if images < 1 or captions_per_image < 1 or tokens < 3:
        raise ConfigError("scale fixture: need images >= 1, captions_per_image >= 1 and tokens >= 3")
    split_dir = Path(split_dir)
    if (split_dir / PLAN).exists() or (split_dir / MANIFEST).exists():
        raise ConfigError(f"file {split_dir}: a cache is already there; the fixture writes only into a new folder")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    pool = _Pool(rng)
    image_ids, caption_ids, caption_images = fixture_ids(images, captions_per_image)
    fp = fixture_fingerprint(images=images, captions=len(caption_ids), image_ids=image_ids, caption_ids=caption_ids,
                             shard_size=shard_size, tokens=tokens, text_dim=text_dim, image_dim=image_dim,
                             grid=grid, prefix=prefix, seed=seed)
    plan = make_plan(fp, caption_ids, image_ids, shard_size)
    write_json_atomic(split_dir / PLAN, plan)
    m = grid[0] * grid[1]
    described = {}
    for s, entry in enumerate(plan["shards"]["image"]):
        ids = image_ids[s * shard_size:s * shard_size + entry["items"]]
        n = len(ids)
        write_image_shard(split_dir / entry["file"], patches=pool.rows(n, m * image_dim).reshape(n, m, image_dim),
                          prefix=pool.rows(n, prefix * image_dim).reshape(n, prefix, image_dim), image_ids=ids,
                          sizes=np.tile(np.array([[640, 480]], np.int32), (n, 1)), grid=grid,
                          num_prefix_tokens=prefix, storage_dtype="float16")
        described[f"image/{s}"] = describe_shard(split_dir, "image", entry)   # hashed while still in page cache
        if log:
            log(f"image shard {s + 1}/{len(plan['shards']['image'])} [{time.perf_counter() - t0:.0f}s]")
    for s, entry in enumerate(plan["shards"]["text"]):
        lo = s * shard_size
        part = _text_shard(pool, rng, caption_ids[lo:lo + entry["items"]], caption_images[lo:lo + entry["items"]],
                           tokens, text_dim)
        write_text_shard(split_dir / entry["file"], storage_dtype="float16", **part)
        described[f"text/{s}"] = describe_shard(split_dir, "text", entry)
        if log and (s + 1) % 10 == 0:
            log(f"text shard {s + 1}/{len(plan['shards']['text'])} [{time.perf_counter() - t0:.0f}s]")
    manifest = build_manifest(plan, described)
    write_json_atomic(split_dir / REPORT, {"skipped": {"captions": [], "images": [], "captions_of_skipped_images": []},
                                           "truncated_captions": 0})
    write_json_atomic(split_dir / RUN_LOG, {"fixture": {"seconds": round(time.perf_counter() - t0, 2)}})
    write_json_atomic(split_dir / MANIFEST, manifest)   # last: its presence marks the cache complete
    return manifest


def write_text_fixture(split_dir: Path, *, item_ids: list[str], lengths: np.ndarray, dim: int = 384,
                       shard_size: int = 4096, seed: int = 0, source: str = "scale fixture") -> dict:
    """A text-only cache (as GLUE and SQuAD inputs are cached) of random states: item i has lengths[i] tokens.
    `item_ids` must be sorted. Returns the manifest."""
    split_dir = Path(split_dir)
    if (split_dir / PLAN).exists():
        raise ConfigError(f"file {split_dir}: a cache is already there; the fixture writes only into a new folder")
    if list(item_ids) != sorted(item_ids) or len(item_ids) != len(lengths) or min(lengths, default=3) < 3:
        raise ConfigError("text fixture: item ids must be sorted, one length >= 3 each")
    rng = np.random.default_rng(seed)
    pool = _Pool(rng)
    fp = make_fingerprint(modalities=["text"], shard_size=shard_size, storage_dtype="float16", compute_dtype="float32",
                          split={"source": source, "items": len(item_ids), "items_sha256": _ids_digest(item_ids)},
                          text={"model": FIXTURE_MODEL, "layer": -1, "max_length": int(max(lengths, default=3))})
    fp["fixture"] = {"kind": "scale-text", "seed": int(seed), "note": NOTE, "text_dim": int(dim)}
    plan = make_plan(fp, list(item_ids), None, shard_size)
    write_json_atomic(split_dir / PLAN, plan)
    described = {}
    for s, entry in enumerate(plan["shards"]["text"]):
        lo, hi = s * shard_size, s * shard_size + entry["items"]
        n = np.asarray(lengths[lo:hi], dtype=np.int64)
        states = pool.rows(int(n.sum()), dim)
        ends = np.cumsum(n)
        spans = [np.zeros((k, 2), np.int32) for k in n]
        for sp in spans:
            sp[1:-1, 0] = np.arange(len(sp) - 2) * 5
            sp[1:-1, 1] = sp[1:-1, 0] + 4
        write_text_shard(split_dir / entry["file"], states=[states[e - k:e] for e, k in zip(ends, n)],
                         token_ids=[rng.integers(1000, 30000, size=k, dtype=np.int32) for k in n], char_spans=spans,
                         caption_ids=list(item_ids[lo:hi]), image_ids=[""] * len(n), truncated=[False] * len(n),
                         storage_dtype="float16", dim=dim)
        described[f"text/{s}"] = describe_shard(split_dir, "text", entry)
    manifest = build_manifest(plan, described)
    write_json_atomic(split_dir / MANIFEST, manifest)
    return manifest
