"""How big a split's cache will be and how long it will take, decided before any shard is written.

    estimate = size_split(text_lengths, image_shape, shard_size, storage_dtype, ...)
    check_free_space(split_dir, estimate)     # CacheError when the disk cannot hold it

The bytes of each shard are computed the way `pipeline/cache/format.py::put` lays them out: every chunked dataset
allocates whole chunks (the last one of a 1024-row chunking padded to full size), plus HDF5's own
metadata. That metadata (object headers, one B-tree entry per chunk) is measured, not guessed: a
probe shard of a few zero-filled items with the real shapes is written to a temporary folder and its
size minus its data is what a shard costs beyond its data. Token counts come from the tokenizer, the
feature widths from the loaded encoders, so the estimate is exact up to those B-tree entries.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache.format import RUN_LOG, write_image_shard, write_text_shard
from pipeline.errors import CacheError
from pipeline.extraction.plan import shard_ranges
from pipeline.io.disk import free_bytes
from pipeline.io.jsonio import read_json

CHUNK_ROWS = 1024           # cache.format.put's default chunking along the first axis
BTREE_ENTRY_BYTES = 56      # HDF5 v1 B-tree bytes per chunk that the probe's few chunks do not show
PROBE_ITEMS = 8
JSON_BYTES = 4096           # plan.json, manifest.json, report.json, run.json of a small split (grows per shard)
JSON_BYTES_PER_SHARD = 600   # an entry in plan.json and a longer one in manifest.json


def _alloc(rows: int, chunk_rows: int, row_bytes: int) -> tuple[int, int]:
    """(bytes, chunks) of one dataset as `put` writes it."""
    if rows == 0 or row_bytes == 0:
        return 0, 0
    chunk = min(chunk_rows, rows)
    chunks = math.ceil(rows / chunk)
    return chunks * chunk * row_bytes, chunks


def text_shard_data(captions: int, tokens: int, dim: int, itemsize: int, id_bytes: int, image_id_bytes: int):
    parts = [_alloc(tokens, CHUNK_ROWS, dim * itemsize), _alloc(captions + 1, CHUNK_ROWS, 8),
             _alloc(tokens, CHUNK_ROWS, 4), _alloc(tokens, CHUNK_ROWS, 8), _alloc(captions, CHUNK_ROWS, id_bytes),
             _alloc(captions, CHUNK_ROWS, image_id_bytes), _alloc(captions, CHUNK_ROWS, 1)]
    return sum(b for b, _ in parts), sum(c for _, c in parts)


def image_shard_data(images: int, patches: int, prefix: int, dim: int, itemsize: int, id_bytes: int):
    parts = [_alloc(images, 1, patches * dim * itemsize), _alloc(images, 1, prefix * dim * itemsize),
             _alloc(images, CHUNK_ROWS, id_bytes), _alloc(images, CHUNK_ROWS, 8)]
    return sum(b for b, _ in parts), sum(c for _, c in parts)


def _probe_overhead(write, data_bytes_and_chunks) -> tuple[int, int]:
    """(bytes beyond the data, chunks) of a probe shard written to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="gb-sizing-") as tmp:
        path = Path(tmp) / "probe.h5"
        write(path)
        size = path.stat().st_size
    data, chunks = data_bytes_and_chunks
    return size - data, chunks


def text_overhead(dim: int, storage_dtype: str, id_bytes: int, image_id_bytes: int) -> tuple[int, int]:
    n, length = PROBE_ITEMS, 4
    ids, img = ["x" * id_bytes] * n, ["y" * image_id_bytes] * n
    write = lambda p: write_text_shard(p, states=[np.zeros((length, dim))] * n, token_ids=[np.zeros(length)] * n,
                                       char_spans=[np.zeros((length, 2))] * n, caption_ids=ids, image_ids=img,
                                       truncated=[False] * n, storage_dtype=storage_dtype, dim=dim)
    return _probe_overhead(write, text_shard_data(n, n * length, dim, np.dtype(storage_dtype).itemsize,
                                                  id_bytes, image_id_bytes))


def image_overhead(shape: tuple[int, int, int], grid: tuple[int, int], storage_dtype: str,
                   id_bytes: int) -> tuple[int, int]:
    m, p, d = shape
    n = PROBE_ITEMS
    write = lambda path: write_image_shard(path, patches=np.zeros((n, m, d)), prefix=np.zeros((n, p, d)),
                                           image_ids=["x" * id_bytes] * n, sizes=np.zeros((n, 2)), grid=grid,
                                           num_prefix_tokens=p, storage_dtype=storage_dtype,
                                           attrs={"skipped": "[]"})   # as image_runner writes it: 4 KiB of header
    return _probe_overhead(write, image_shard_data(n, m, p, d, np.dtype(storage_dtype).itemsize, id_bytes))


def _id_width(ids: list[str], start: int, stop: int) -> int:
    """encode_ids stores a shard's ids at the width of its longest one."""
    return max((len(i.encode("utf-8")) for i in ids[start:stop]), default=1) or 1


@dataclass
class Estimate:
    records: int
    unique_images: int
    shards: dict = field(default_factory=dict)       # modality -> shard count
    bytes: dict = field(default_factory=dict)        # modality -> estimated bytes of its shards
    total_bytes: int = 0
    tokens: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def size_split(*, caption_ids: list[str] | None, caption_image_ids: list[str] | None,
               token_lengths: np.ndarray | None, text_dim: int | None, image_ids: list[str] | None,
               image_shape: tuple[int, int, int] | None, grid: tuple[int, int] | None, shard_size: int,
               storage_dtype: str, records: int) -> Estimate:
    """The bytes each modality's shards will take. Ids sorted as extraction sorts them; `image_shape` is
    (patches, prefix tokens, width); `token_lengths[i]` is caption i's token count after truncation."""
    itemsize = np.dtype(storage_dtype).itemsize
    est = Estimate(records=records, unique_images=len(image_ids or []))
    if caption_ids is not None:
        ranges = shard_ranges(len(caption_ids), shard_size)
        ends = np.concatenate([[0], np.cumsum(token_lengths)])
        total, base = 0, {}
        for start, stop in ranges:
            widths = (_id_width(caption_ids, start, stop), _id_width(caption_image_ids, start, stop))
            if widths not in base:
                base[widths] = text_overhead(text_dim, storage_dtype, *widths)
            extra, probe_chunks = base[widths]
            data, chunks = text_shard_data(stop - start, int(ends[stop] - ends[start]), text_dim, itemsize, *widths)
            total += data + extra + BTREE_ENTRY_BYTES * max(0, chunks - probe_chunks)
        est.shards["text"], est.bytes["text"], est.tokens = len(ranges), total, int(ends[-1])
    if image_ids is not None:
        ranges = shard_ranges(len(image_ids), shard_size)
        total, base = 0, {}
        for start, stop in ranges:
            width = _id_width(image_ids, start, stop)
            if width not in base:
                base[width] = image_overhead(image_shape, grid, storage_dtype, width)
            extra, probe_chunks = base[width]
            data, chunks = image_shard_data(stop - start, *image_shape, itemsize, width)
            total += data + extra + BTREE_ENTRY_BYTES * max(0, chunks - probe_chunks)
        est.shards["image"], est.bytes["image"] = len(ranges), total
    n_shards = sum(est.shards.values())
    est.total_bytes = sum(est.bytes.values()) + JSON_BYTES + JSON_BYTES_PER_SHARD * n_shards
    return est


# ----------------------------------------------------------------------------- the disk and the clock

def bytes_already_there(split_dir: Path) -> int:
    """Shards a previous, interrupted run left: a resumed run does not write them again."""
    split_dir = Path(split_dir)
    return sum(p.stat().st_size for m in ("text", "image") if (split_dir / m).is_dir()
               for p in (split_dir / m).glob("*.h5"))


def check_free_space(split_dir: Path, estimate: Estimate, margin: float = 0.02) -> int:
    """Raise when the estimated cache (less what is already written, plus a small margin) exceeds the free
    space. Returns the free bytes."""
    free = free_bytes(split_dir)
    needed = int(max(0, estimate.total_bytes - bytes_already_there(split_dir)) * (1 + margin))
    if needed > free:
        raise CacheError(f"file {split_dir}: the cache needs about {human(needed)} but the filesystem has "
                         f"{human(free)} free; free some space or use another --cache folder (see --dry-run)")
    return free


def measured_throughput(cache_root: Path, text_model: str | None, image_model: str | None) -> dict:
    """Items per second of an earlier extraction with the same encoders, from a run.json under the cache root
    (the one that timed the most items): {modality: (items_per_s, source file)}. Empty when none was made here."""
    out, counted = {}, {}
    root = Path(cache_root)
    for run_log in sorted(root.glob(f"*/{RUN_LOG}")) if root.is_dir() else []:
        try:
            log = read_json(run_log)
        except CacheError:
            continue
        cfg, timing = log.get("config", {}), log.get("timing", {})
        for modality, model in (("text", text_model), ("image", image_model)):
            rate, items = timing.get(modality, {}).get("items_per_s"), timing.get(modality, {}).get("items", 0)
            key = "text_model" if modality == "text" else "image_model"
            if model and rate and cfg.get(key) == model and items > counted.get(modality, -1):
                source = f"{run_log}, device {log.get('device', '?')}, world size {log.get('world_size', 1)}"
                out[modality], counted[modality] = (float(rate), source), items
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def describe(est: Estimate, free: int, throughput: dict, split_dir: Path) -> list[str]:
    """The lines `extract --dry-run` prints."""
    lines = [f"{split_dir}: dry run, nothing written",
             f"  records {est.records}, unique images {est.unique_images}, tokens {est.tokens}",
             "  shards: " + ", ".join(f"{m} {n}" for m, n in est.shards.items()),
             "  estimated cache: " + ", ".join(f"{m} {human(b)}" for m, b in est.bytes.items())
             + f"; total {human(est.total_bytes)} ({est.total_bytes} bytes)",
             f"  free on the target filesystem: {human(free)}"
             + ("" if free >= est.total_bytes else "  -> NOT ENOUGH: a real run would refuse to start")]
    counts = {"text": est.records, "image": est.unique_images}
    seconds = 0.0
    for m in est.shards:
        if m in throughput:
            rate, source = throughput[m]
            seconds += counts[m] / rate
            lines.append(f"  {m}: {rate:.1f} items/s measured here earlier ({source})")
        else:
            lines.append(f"  {m}: no throughput measured with this encoder under the cache root; time unknown")
    if all(m in throughput for m in est.shards):
        lines.append(f"  estimated time: {seconds / 60:.1f} min (one process, at those rates)")
    return lines


# ----------------------------------------------------------------------------- from an extraction's jobs

def estimate_for_items(records: int, text_items, text_dim: int | None, image_items, image_encoder,
                       shard_size: int, storage_dtype: str) -> Estimate:
    """The estimate from what extraction itself computes first: pre-tokenised items (sorted by id) and the
    image encoder, loaded (its grid, prefix and width come from one tiny forward at load)."""
    image_shape = grid = None
    if image_items is not None:
        image_shape = (image_encoder.num_patches, image_encoder.num_prefix_tokens, image_encoder.dim)
        grid = image_encoder.grid
    return size_split(
        caption_ids=[t.item_id for t in text_items] if text_items is not None else None,
        caption_image_ids=[t.image_id for t in text_items] if text_items is not None else None,
        token_lengths=np.array([len(t.tokens.ids) for t in text_items], np.int64) if text_items is not None else None,
        text_dim=text_dim, image_ids=[i.image_id for i in image_items] if image_items is not None else None,
        image_shape=image_shape, grid=grid, shard_size=shard_size, storage_dtype=storage_dtype, records=records)


def dry_run_lines(cfg: dict, mods: list[str], records, split_dir: Path) -> list[str]:
    """What `extract --dry-run` prints: the encoders are loaded on the CPU for their tokenizer and widths
    (the image encoder runs one tiny forward at load), nothing else runs and nothing is written."""
    from pipeline.encoders import load_image_encoder, load_text_encoder
    from pipeline.extraction.plan import caption_items, image_items

    text_items = image_list = image_encoder = text_dim = None
    if "text" in mods:
        enc = load_text_encoder(cfg["text_model"], layer=cfg["text_layer"], max_length=cfg["max_length"],
                                device="cpu", compute_dtype="float32")
        text_items, text_dim = caption_items(records, enc), enc.dim
    if "image" in mods:
        image_encoder = load_image_encoder(cfg["image_model"], image_size=cfg["image_size"], device="cpu",
                                           compute_dtype="float32", compile=False, batch_size=1)
        image_list = image_items(records)
    est = estimate_for_items(len(records), text_items, text_dim, image_list, image_encoder, cfg["shard_size"],
                             cfg["storage_dtype"])
    rates = measured_throughput(Path(split_dir).parent, cfg["text_model"] if "text" in mods else None,
                                cfg["image_model"] if "image" in mods else None)
    return describe(est, free_bytes(split_dir), rates, split_dir)
