"""The feature cache on disk: the contract between stage one (writes) and stage two (reads).

One cache directory holds one split (the CLI's `--cache cache/default` holds `train/`, `val/`, `test/`):

    SPLIT_DIR/
      plan.json        fingerprint fields + the shard plan; written first, before any shard
      text/00000.h5    caption shards, contiguous runs of the captions sorted by caption id
      image/00000.h5   image shards, contiguous runs of the unique images sorted by image id
      report.json      skipped items (--on-error skip), truncated captions (deterministic)
      run.json         what varies between runs: timings, device, world size, resolved config
                       (ignored by DVC through .dvcignore, like the `.lock` file)
      manifest.json    written last: the plan plus each shard's sha256 and counts.
                       Its presence is what makes the cache complete.

Text shard datasets (C captions, T tokens in all):
    states      (T, d_t)  storage dtype   hidden state of every token, captions back to back
    offsets     (C+1,)    int64           caption c owns rows offsets[c]:offsets[c+1]
    token_ids   (T,)      int32
    char_spans  (T, 2)    int32           (start, end) character offsets in the caption; (0, 0) for specials
    caption_ids (C,)      bytes (utf-8)
    image_ids   (C,)      bytes (utf-8)   the image each caption belongs to
    truncated   (C,)      bool            caption was longer than max_length
Image shard datasets (N images, m patches, P prefix tokens):
    patches     (N, m, d_v) storage dtype final-norm patch tokens, row-major over the grid
    prefix      (N, P, d_v) storage dtype prefix tokens (CLS first, then registers); P may be 0
    image_ids   (N,)      bytes (utf-8)
    sizes       (N, 2)    int32           original (width, height) in pixels, before preprocessing
  attrs: grid_h, grid_w (patch grid), num_prefix_tokens; skipped (JSON list of the shard's images left
         out under --on-error skip: file, item, image_id, reason); class_token = 0 only when the prefix
         holds registers but no class token (absent, as in every older cache: CLS first when P > 0).

Every shard is built in memory and written to a temporary file in the same folder, then renamed into
place (`atomic_h5`): a shard under its final name is complete. Bytes are deterministic (no timestamps,
fixed chunking), so the same inputs give identical files and DVC sees no change.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from pipeline.errors import CacheError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.io.disk import full_disk_as_error
from pipeline.io.jsonio import read_json

FORMAT_VERSION = 1
PLAN, MANIFEST, REPORT, RUN_LOG = "plan.json", "manifest.json", "report.json", "run.json"
MODALITIES = ("text", "image")


def shard_path(split_dir: Path, modality: str, index: int) -> Path:
    return Path(split_dir) / modality / f"{index:05d}.h5"


def missing_shards(split_dir: Path, plan: dict) -> dict[str, list[int]]:
    """Per modality, the indices of the plan's shards not (yet) on disk."""
    return {m: [i for i, s in enumerate(entries) if not (Path(split_dir) / s["file"]).exists()]
            for m, entries in plan["shards"].items()}


def put(f: h5py.File, name: str, array: np.ndarray, chunk_rows: int = 1024) -> None:
    """Create a dataset with deterministic layout: fixed chunking along the first axis, no times."""
    array = np.asarray(array)
    chunks = None  # an empty array (no prefix tokens: a CNN) cannot be chunked
    if array.ndim >= 1 and array.size > 0:
        chunks = (min(chunk_rows, array.shape[0]),) + array.shape[1:]
    f.create_dataset(name, data=array, chunks=chunks, track_times=False)


def encode_ids(ids: list[str]) -> np.ndarray:
    raw = [s.encode("utf-8") for s in ids]
    width = max((len(b) for b in raw), default=1) or 1
    return np.array(raw, dtype=f"S{width}")


def decode_ids(array) -> list[str]:
    return [b.decode("utf-8") for b in np.asarray(array)]


# ----------------------------------------------------------------------------- reading

@dataclass
class TextSplit:
    """All caption shards of a split concatenated in memory (or memory-mapped views of them)."""
    states: np.ndarray       # (T, d_t)
    offsets: np.ndarray      # (C+1,)
    token_ids: np.ndarray    # (T,)
    char_spans: np.ndarray   # (T, 2)
    caption_ids: list[str]
    image_ids: list[str]
    truncated: np.ndarray    # (C,)


@dataclass
class ImageSplit:
    patches: np.ndarray      # (N, m, d_v)
    prefix: np.ndarray       # (N, P, d_v)
    image_ids: list[str]
    sizes: np.ndarray        # (N, 2)
    grid: tuple[int, int]
    num_prefix_tokens: int
    class_token: bool        # prefix[:, 0] is a class token (else p_0 is the patch mean)


def prefix_has_class_token(attrs) -> bool:
    """Whether an image shard's first prefix token is a class token, from its attributes. The attribute is
    written only when it is not (registers alone), so a shard without it, old or new, keeps the original
    meaning: CLS first whenever there are prefix tokens."""
    return int(attrs.get("num_prefix_tokens", 0)) > 0 and bool(attrs.get("class_token", 1))


def image_shard_properties(attrs) -> dict:
    """The split-wide properties an image shard records, which every shard of a split must share."""
    try:
        return {"grid": (int(attrs["grid_h"]), int(attrs["grid_w"])),
                "num_prefix_tokens": int(attrs.get("num_prefix_tokens", 0)),
                "class_token": prefix_has_class_token(attrs)}
    except KeyError as e:
        raise CacheError(f"corrupt image shard, attribute missing: {e}") from e


def check_shards_agree(paths: list[Path], attrs: list) -> dict:
    """The first image shard's attributes, once every other shard records the same patch grid, prefix
    length and class-token flag; otherwise a CacheError naming both files and the field."""
    if not attrs:
        return {}
    props = []
    for path, a in zip(paths, attrs):
        try:
            props.append(image_shard_properties(a))
        except CacheError as e:
            raise CacheError(f"file {path}: {e}") from e
    for path, p in zip(paths[1:], props[1:]):
        for field, value in p.items():
            if value != props[0][field]:
                raise CacheError(f"file {path}: image shards disagree on {field}: {value!r} here, "
                                 f"{props[0][field]!r} in {paths[0]}")
    return attrs[0]


def open_manifest(split_dir: Path) -> dict:
    """The manifest of a complete cache, or a clear error saying what is missing."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise CacheError(f"file {split_dir}: cache folder not found (run `groundedbert extract` first)")
    if not (split_dir / MANIFEST).exists():
        detail = "extraction was interrupted; run the same `groundedbert extract` again to finish it" \
            if (split_dir / PLAN).exists() else "not a feature cache"
        raise CacheError(f"file {split_dir / MANIFEST}: missing, the cache is incomplete ({detail})")
    return read_json(split_dir / MANIFEST)


def shard_files(split_dir: Path, manifest: dict, modality: str) -> list[Path]:
    """The modality's shards (none when the cache was extracted without that modality)."""
    return [Path(split_dir) / s["file"] for s in manifest.get("shards", {}).get(modality, [])]


def read_shard(path: Path, names: tuple[str, ...]) -> dict:
    """The named datasets of one shard, whole, and its attributes under "attrs"; CacheError when unreadable."""
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in names if n not in f]
            if missing:
                raise CacheError(f"file {path}: corrupt shard, datasets missing: {missing}")
            out = {n: f[n][()] for n in names}
            out["attrs"] = dict(f.attrs)
            return out
    except (OSError, KeyError) as e:
        raise CacheError(f"file {path}: cannot read shard ({e})") from e


def dataset_layout(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and stored dtype of one dataset of a shard, read without its values."""
    try:
        with h5py.File(path, "r") as f:
            return tuple(f[name].shape), f[name].dtype
    except (OSError, KeyError) as e:
        raise CacheError(f"file {path}: cannot read dataset {name!r} ({e})") from e


def shard_counts(path: Path, modality: str) -> dict:
    """What the manifest records of one shard besides its checksum: its items and dimensions."""
    with h5py.File(path, "r") as f:
        if modality == "text":
            return {"count": int(f["caption_ids"].shape[0]), "tokens": int(f["states"].shape[0]),
                    "truncated": int(np.count_nonzero(f["truncated"][()])), "dim": int(f["states"].shape[1])}
        out = {"count": int(f["image_ids"].shape[0]), "skipped": len(json.loads(f.attrs.get("skipped", "[]"))),
               "patches": int(f["patches"].shape[1]), "prefix": int(f["prefix"].shape[1]),
               "dim": int(f["patches"].shape[2]), "grid": [int(f.attrs["grid_h"]), int(f.attrs["grid_w"])]}
        if "class_token" in f.attrs:  # registers alone; absent otherwise, so older manifests keep their bytes
            out["class_token"] = False
        return out


def shard_records(path: Path, attr: str) -> list[dict]:
    """The JSON list of records an image shard keeps in attribute `attr` ([] when it keeps none)."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs.get(attr, "[]"))


class OpenShards(dict):
    """Shard files held open for reading rows on demand, by path. HDF5 handles do not survive fork or
    pickling: a forked process (a DataLoader worker) opens its own on first use, and a pickled copy (what
    a spawned worker receives) starts empty."""

    def __init__(self):
        super().__init__()
        self.pid = os.getpid()

    def __reduce__(self):
        return OpenShards, ()

    def _file(self, path: Path) -> h5py.File:
        if self.pid != os.getpid():   # a forked process: the parent's handles are not usable here
            self.clear()
            self.pid = os.getpid()
        if path not in self:
            try:
                self[path] = h5py.File(path, "r")
            except OSError as e:
                raise CacheError(f"file {path}: cannot open shard ({e})") from e
        return self[path]

    def rows(self, path: Path, names: tuple[str, ...], index) -> tuple[np.ndarray, ...]:
        """The datasets `names` of one shard at `index` along the first axis: a slice, or increasing
        indices (HDF5 gathers need them sorted)."""
        f = self._file(path)
        try:
            return tuple(f[n][index] for n in names)
        except (OSError, KeyError) as e:
            raise CacheError(f"file {path}: cannot read rows of {', '.join(names)} ({e})") from e

    def row_nbytes(self, path: Path, names: tuple[str, ...]) -> int:
        """Bytes of one row of the datasets `names` together, as stored."""
        f = self._file(path)
        return sum(int(np.prod(f[n].shape[1:])) * f[n].dtype.itemsize for n in names)


def load_text(split_dir: Path) -> TextSplit:
    manifest = open_manifest(split_dir)
    names = ("states", "offsets", "token_ids", "char_spans", "caption_ids", "image_ids", "truncated")
    parts = [read_shard(p, names) for p in shard_files(split_dir, manifest, "text")]
    if not parts:
        raise CacheError(f"file {Path(split_dir) / MANIFEST}: the split has no captions")
    offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        offsets.append(p["offsets"][1:] + base)
        base += int(p["offsets"][-1])
    return TextSplit(
        states=np.concatenate([p["states"] for p in parts]),
        offsets=np.concatenate(offsets),
        token_ids=np.concatenate([p["token_ids"] for p in parts]),
        char_spans=np.concatenate([p["char_spans"] for p in parts]),
        caption_ids=sum((decode_ids(p["caption_ids"]) for p in parts), []),
        image_ids=sum((decode_ids(p["image_ids"]) for p in parts), []),
        truncated=np.concatenate([p["truncated"] for p in parts]),
    )


def load_images(split_dir: Path) -> ImageSplit:
    manifest = open_manifest(split_dir)
    names = ("patches", "prefix", "image_ids", "sizes")
    paths = shard_files(split_dir, manifest, "image")
    parts = [read_shard(p, names) for p in paths]
    if not parts:
        raise CacheError(f"file {Path(split_dir) / MANIFEST}: the split has no images")
    a = check_shards_agree(paths, [p["attrs"] for p in parts])
    return ImageSplit(
        patches=np.concatenate([p["patches"] for p in parts]),
        prefix=np.concatenate([p["prefix"] for p in parts]),
        image_ids=sum((decode_ids(p["image_ids"]) for p in parts), []),
        sizes=np.concatenate([p["sizes"] for p in parts]),
        grid=(int(a["grid_h"]), int(a["grid_w"])),
        num_prefix_tokens=int(a["num_prefix_tokens"]),
        class_token=prefix_has_class_token(a),
    )


# ----------------------------------------------------------------------------- writing one shard

@contextlib.contextmanager
def atomic_h5(final: Path) -> Iterator[h5py.File]:
    """The HDF5 file is built in memory (HDF5's core driver, no backing file) and its bytes written by
    write_bytes_atomic: HDF5 never writes to disk itself, so a full disk is a DiskFullError, not pages of
    HDF5 errors ending in a segfault. The core driver lays out the same bytes as a file on disk."""
    final = Path(final)
    with full_disk_as_error(final.parent, what=f"the folder of {final.name}"):
        final.parent.mkdir(parents=True, exist_ok=True)
    # libver pinned and no timestamps: identical inputs -> identical bytes.
    with h5py.File(final.name, "w", driver="core", backing_store=False, libver=("earliest", "v110"),
                   track_order=False) as f:
        yield f
        f.flush()
        image = f.id.get_file_image()
    write_bytes_atomic(final, image)


def write_text_shard(path: Path, *, states: list[np.ndarray], token_ids: list[np.ndarray],
                     char_spans: list[np.ndarray], caption_ids: list[str], image_ids: list[str],
                     truncated: list[bool], storage_dtype: str, attrs: dict | None = None,
                     dim: int | None = None) -> None:
    """Write one caption shard atomically. Lists are per caption, in the order they will be stored
    (sorted by caption id, whatever order the batches were computed in). `dim` gives an empty shard
    (every caption dropped with its skipped image) the width of the others."""
    lengths = np.array([len(s) for s in states], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    d = states[0].shape[1] if states else (dim or 0)
    with atomic_h5(path) as f:
        put(f, "states", np.concatenate(states).astype(storage_dtype) if states else np.zeros((0, d), storage_dtype))
        put(f, "offsets", offsets)
        put(f, "token_ids", np.concatenate(token_ids).astype(np.int32) if token_ids else np.zeros(0, np.int32))
        put(f, "char_spans", np.concatenate(char_spans).astype(np.int32) if char_spans else np.zeros((0, 2), np.int32))
        put(f, "caption_ids", encode_ids(caption_ids))
        put(f, "image_ids", encode_ids(image_ids))
        put(f, "truncated", np.asarray(truncated, dtype=bool))
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def write_image_shard(path: Path, *, patches: np.ndarray, prefix: np.ndarray, image_ids: list[str],
                      sizes: np.ndarray, grid: tuple[int, int], num_prefix_tokens: int,
                      storage_dtype: str, attrs: dict | None = None, class_token: bool = True) -> None:
    """Write one image shard atomically; one chunk per image so readers can gather rows cheaply.
    `class_token`: whether prefix token 0 is a class token (ignored without prefix tokens)."""
    with atomic_h5(path) as f:
        put(f, "patches", np.asarray(patches).astype(storage_dtype), chunk_rows=1)
        put(f, "prefix", np.asarray(prefix).astype(storage_dtype), chunk_rows=1)
        put(f, "image_ids", encode_ids(image_ids))
        put(f, "sizes", np.asarray(sizes, dtype=np.int32))
        f.attrs["grid_h"], f.attrs["grid_w"] = int(grid[0]), int(grid[1])
        f.attrs["num_prefix_tokens"] = int(num_prefix_tokens)
        if num_prefix_tokens > 0 and not class_token:  # only then: CLS-first shards keep their bytes
            f.attrs["class_token"] = 0
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
