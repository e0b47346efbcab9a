"""Tasks -> pre-tokenised items -> stage one's text cache -> token states in the task's order.

GLUE inputs are `[CLS] A [SEP] B [SEP]` (truncating the longer sentence first, as BERT does);
SQuAD inputs are the windows of `squad.make_windows`. Both go through the extraction runner
(`build_text_cache`) and are stored in the ordinary cache format, one split folder per task file.
The folder name carries a digest of the task file, the tokenisation knobs, the shard layout and the
encoder's fingerprint, so seeds, sweeps and both heads share one cache, and a changed input gets a new folder
instead of clashing with the old one.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.cache.format import load_text
from pipeline.downstream.glue import GlueExample
from pipeline.downstream.probe import TokenBank
from pipeline.downstream.squad import Window
from pipeline.encoders import Tokens
from pipeline.errors import CacheError
from pipeline.extraction import TextItem, build_text_cache
from pipeline.grounded.vectors import PairInputs, tokenize_texts
from pipeline.io.hashing import digest, file_sha256


def tokenize_pairs(examples: list[GlueExample], tokenizer, max_length: int) -> PairInputs:
    """GLUE examples as GroundedEncoder.encode tokenises texts (grounded/vectors.py), one entry per example."""
    pairs = bool(examples) and examples[0].text_b is not None
    return tokenize_texts([e.text_a for e in examples], [e.text_b for e in examples] if pairs else None,
                          tokenizer, max_length)


def glue_items(examples: list[GlueExample], inputs: PairInputs) -> list[TextItem]:
    return [TextItem(e.guid, "", Tokens(i, s, t, type_ids=ty)) for e, i, s, t, ty in
            zip(examples, inputs.ids, inputs.spans, inputs.truncated, inputs.type_ids)]


def squad_items(windows: list[Window]) -> list[TextItem]:
    return [TextItem(w.item_id, "", Tokens(w.input_ids, w.spans, False, type_ids=w.type_ids)) for w in windows]


def split_folder(cache_root: Path, task: str, split: str, source: dict, encoder, cfg: dict) -> Path:
    key = digest({"source": source, "encoder": encoder.fingerprint(), "shard_size": cfg["shard_size"],
                  "storage_dtype": cfg["storage_dtype"]})[:16]
    return Path(cache_root) / task / f"{split}-{key}"


def cached_states(items: list[TextItem], encoder, cache_root: Path, *, task: str, split: str, source: dict,
                  cfg: dict, progress: bool = False) -> tuple[TokenBank, Path]:
    """Extract the items (only what is not cached yet) and return their states in the items' order."""
    folder = split_folder(cache_root, task, split, source, encoder, cfg)
    build = dict(source=source, shard_size=cfg["shard_size"], batch_size=cfg["extract_batch_size"],
                 storage_dtype=cfg["storage_dtype"], progress=progress)
    try:
        build_text_cache(items, encoder, folder, **build)
    except CacheError:
        # The folder's name already pins the inputs and the encoder, so a plan that disagrees was written
        # by an older version of the extraction code (or is damaged): the cache is derived data, rebuild it.
        build_text_cache(items, encoder, folder, overwrite=True, **build)
    split_data = load_text(folder)
    row = {cid: k for k, cid in enumerate(split_data.caption_ids)}
    off = split_data.offsets
    states = [split_data.states[off[row[it.item_id]]:off[row[it.item_id] + 1]] for it in items]
    return TokenBank(states), folder


def source_of(path: Path, **knobs) -> dict:
    """What a cached split was made from: the file's name and sha256, and the tokenisation knobs."""
    return {"file": Path(path).name, "file_sha256": file_sha256(path), **knobs}
