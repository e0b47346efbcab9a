"""Small fake feature caches in the exact on-disk format (pipeline/cache/format.py), for stage-two tests.

The features are not random noise: every image has a "concept" vector, its patches are noisy copies of
a few concept directions, and each caption's content tokens are a fixed linear map of its own image's
patches plus noise. So matching and alignment are learnable in a few epochs, and a test can tell a
model that learned from one that did not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cache.format import shard_path, write_image_shard, write_text_shard
from pipeline.config import load_defaults
from pipeline.io.atomic import write_json_atomic

D_T, D_V, GRID, PREFIX = 16, 12, (4, 4), 1


def default_fingerprint(split: str, **changes) -> dict:
    """A fingerprint shaped like the extract stage's, agreeing with params.yaml's extract section."""
    ex = load_defaults()["extract"]
    fp = {"format_version": 1, "modalities": ["image", "text"], "split": {"name": split},
          "shard_size": ex["shard_size"], "storage_dtype": ex["storage_dtype"], "compute_dtype": ex["compute_dtype"],
          "text": {"model": ex["text_model"], "layer": ex["text_layer"], "max_length": ex["max_length"],
                   "encoder": {"weights_sha256": "t" * 8}},
          "image": {"model": ex["image_model"], "image_size": ex["image_size"], "encoder": {"weights_sha256": "i" * 8}}}
    for dotted, value in changes.items():
        node = fp
        *head, last = dotted.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    return fp


def make_split(split_dir: Path, *, n_images: int = 12, captions_per_image: int = 2, seed: int = 0,
               shard_size: int = 1000, prefix_tokens: int = PREFIX, fingerprint: dict | None = None,
               nan_caption: int | None = None) -> dict:
    """Write one split; returns the arrays it wrote (for tests that check what the reader gives back)."""
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(1234).normal(size=(D_V, D_T)) / np.sqrt(D_V)   # same map in every split
    m = GRID[0] * GRID[1]
    patches = rng.normal(size=(n_images, m, D_V)).astype(np.float32) * 0.3
    concepts = np.random.default_rng(99).normal(size=(6, D_V)).astype(np.float32)
    for i in range(n_images):
        for j, c in enumerate(rng.choice(6, size=2, replace=False)):
            patches[i, j * 4:(j * 4) + 5] += concepts[c]                        # a region per concept
    prefix = patches.mean(1, keepdims=True).repeat(prefix_tokens, 1) if prefix_tokens else np.zeros((n_images, 0, D_V))
    image_ids = [f"img{i:03d}" for i in range(n_images)]
    sizes = np.array([[64 + 16 * (i % 3), 64] for i in range(n_images)], dtype=np.int32)

    caps = {"states": [], "token_ids": [], "char_spans": [], "caption_ids": [], "image_ids": []}
    for i in range(n_images):
        for c in range(captions_per_image):
            n = int(rng.integers(3, 8))                                         # content tokens
            picks = rng.integers(0, m, size=n)
            content = patches[i, picks] @ proj + rng.normal(size=(n, D_T)) * 0.1
            cls = patches[i].mean(0) @ proj
            states = np.concatenate([cls[None], content, np.zeros((1, D_T))]).astype(np.float32)
            if nan_caption is not None and len(caps["caption_ids"]) == nan_caption:
                states[1] = np.nan
            spans = np.array([[0, 0]] + [[4 * k, 4 * k + 3] for k in range(n)] + [[0, 0]], dtype=np.int32)
            caps["states"].append(states)
            caps["token_ids"].append(np.arange(n + 2, dtype=np.int32))
            caps["char_spans"].append(spans)
            caps["caption_ids"].append(f"cap{i:03d}_{c}")
            caps["image_ids"].append(image_ids[i])

    split_dir = Path(split_dir)
    shards = {"text": [], "image": []}
    n_caps = len(caps["caption_ids"])
    for s, start in enumerate(range(0, n_caps, shard_size)):
        sl = slice(start, start + shard_size)
        path = shard_path(split_dir, "text", s)
        write_text_shard(path, states=caps["states"][sl], token_ids=caps["token_ids"][sl],
                         char_spans=caps["char_spans"][sl], caption_ids=caps["caption_ids"][sl],
                         image_ids=caps["image_ids"][sl], truncated=[False] * len(caps["caption_ids"][sl]),
                         storage_dtype="float16")
        shards["text"].append({"file": f"text/{s:05d}.h5", "count": len(caps["caption_ids"][sl])})
    for s, start in enumerate(range(0, n_images, shard_size)):
        sl = slice(start, start + shard_size)
        path = shard_path(split_dir, "image", s)
        write_image_shard(path, patches=patches[sl], prefix=prefix[sl], image_ids=image_ids[sl], sizes=sizes[sl],
                          grid=GRID, num_prefix_tokens=prefix_tokens, storage_dtype="float16")
        shards["image"].append({"file": f"image/{s:05d}.h5", "count": len(image_ids[sl])})
    fp = fingerprint if fingerprint is not None else default_fingerprint(split_dir.name)
    write_json_atomic(split_dir / "plan.json", {"format_version": 1, "fingerprint": fp, "shards": shards})
    write_json_atomic(split_dir / "manifest.json", {"format_version": 1, "fingerprint": fp, "shards": shards})
    return {"patches": patches, "prefix": prefix, "image_ids": image_ids, "sizes": sizes, **caps}


def make_cache(root: Path, sizes=(("train", 16), ("val", 6), ("test", 6)), **kwargs) -> Path:
    for k, (split, n) in enumerate(sizes):
        make_split(Path(root) / split, n_images=n, seed=k, **kwargs)
    return Path(root)


TINY_TRAIN = ["train.d_g=8", "train.hidden=16", "train.batch_size=8", "train.epochs=3", "train.warmup_steps=2",
              "train.patience=10", "train.lr=0.01", "train.num_threads=1"]
