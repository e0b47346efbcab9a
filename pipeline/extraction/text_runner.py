"""Text extraction: pre-tokenised items -> caption shards.

Callers hand over `TextItem`s (captions via `plan.caption_items`, or GLUE pairs and SQuAD windows
tokenised elsewhere). Within a shard the items are sorted by token count into batches, so a batch
pads only to lengths its neighbours share; the states are then put back in id order, so a shard's
bytes do not depend on the order they were computed in. Batches are a function of the shard alone,
which is why any rank, in any run, computes the same numbers for it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cache.format import shard_path, write_text_shard
from pipeline.encoders.text import length_batches
from pipeline.extraction.plan import TextItem, shard_ranges
from pipeline.extraction.timing import Timer


def encode_shard(items: list[TextItem], encoder, batch_size: int, timer: Timer, bar=None) -> list[np.ndarray]:
    states: list[np.ndarray | None] = [None] * len(items)
    for batch in length_batches([len(it.tokens.ids) for it in items], batch_size):
        with timer.phase("infer"):
            out = encoder.encode([items[i].tokens for i in batch])
        for i, s in zip(batch, out):
            states[i] = s
        timer.items += len(batch)
        if bar is not None:
            bar.update(len(batch))
    return states


def extract_text(items: list[TextItem], encoder, split_dir: Path, *, shard_size: int, batch_size: int,
                 storage_dtype: str = "float16", shards: list[int] | None = None,
                 drop_image_ids: frozenset[str] = frozenset(), progress: bool = True) -> dict:
    """Compute the listed shards (default: all) that are not on disk yet. `items` are all items of the
    split, sorted by id (the plan's order); those whose image is in `drop_image_ids` are left out.
    Returns the timing summary."""
    ranges = shard_ranges(len(items), shard_size)
    todo = [i for i in (range(len(ranges)) if shards is None else shards)
            if not shard_path(split_dir, "text", i).exists()]
    timer = Timer()
    total = sum(ranges[i][1] - ranges[i][0] for i in todo)
    with tqdm(total=total, unit="cap", desc="text", disable=not progress or not todo, smoothing=0.1) as bar:
        for i in todo:
            start, stop = ranges[i]
            part = [it for it in items[start:stop] if not (it.image_id and it.image_id in drop_image_ids)]
            states = encode_shard(part, encoder, batch_size, timer, bar)
            with timer.phase("write"):
                write_text_shard(shard_path(split_dir, "text", i), states=states,
                                 token_ids=[it.tokens.ids for it in part], char_spans=[it.tokens.spans for it in part],
                                 caption_ids=[it.item_id for it in part], image_ids=[it.image_id for it in part],
                                 truncated=[bool(it.tokens.truncated) for it in part], storage_dtype=storage_dtype,
                                 dim=int(encoder.dim))
    return timer.summary()
