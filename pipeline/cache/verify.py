"""`verify_cache(split_dir)`: everything that can be checked about a split's cache, as a list of problems.

Checked: the manifest is there; every shard it lists exists and has the sha256 it records; datasets,
shapes and counts agree with each other and with the manifest; every image shard reads its prefix the
way the encoder's fingerprint says (class token first or not); offsets start at 0, never decrease and
end at the token count; every value is finite; caption ids are unique and in order; the image of
every caption is in the image shards. An empty list means the cache is sound.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.cache.finite import caption_of_token, first_bad_row
from pipeline.cache.format import MANIFEST, decode_ids, open_manifest, prefix_has_class_token
from pipeline.errors import CacheError
from pipeline.io.hashing import file_sha256

TEXT_SETS = ("states", "offsets", "token_ids", "char_spans", "caption_ids", "image_ids", "truncated")
IMAGE_SETS = ("patches", "prefix", "image_ids", "sizes")
BLOCK_BYTES = 64 << 20  # finiteness is checked in blocks so a large shard never sits in memory whole


def verify_cache(split_dir: Path) -> list[str]:
    split_dir = Path(split_dir)
    try:
        manifest = open_manifest(split_dir)
    except CacheError as e:
        return [str(e)]
    problems: list[str] = []
    # The encoder's fingerprint records `class_token: false` only for a prefix of registers alone.
    encoder = manifest.get("fingerprint", {}).get("image", {}).get("encoder", {})
    class_token = encoder.get("class_token", True)
    caption_images, image_ids = set(), set()
    last_caption = None
    listed = set()
    for modality in ("image", "text"):
        for n, entry in enumerate(manifest.get("shards", {}).get(modality, [])):
            path = split_dir / entry["file"]
            listed.add(path.resolve())
            if not path.exists():
                problems.append(f"file {path}: missing ({modality} shard {n} of the manifest)")
                continue
            if "sha256" in entry and file_sha256(path) != entry["sha256"]:
                problems.append(f"file {path}: sha256 differs from the manifest (the file changed or is corrupt)")
            try:
                with h5py.File(path, "r") as f:
                    if modality == "text":
                        ids, images = _check_text(f, entry, path, problems)
                        for c in ids:
                            if last_caption is not None and c <= last_caption:
                                problems.append(f"file {path}: caption id {c!r} out of order or repeated")
                                break
                            last_caption = c
                        caption_images.update(i for i in images if i)
                    else:
                        image_ids.update(_check_image(f, entry, path, problems, class_token))
            except (OSError, KeyError, ValueError) as e:
                problems.append(f"file {path}: cannot be read as a shard ({e})")
    for modality in ("text", "image"):
        for p in sorted((split_dir / modality).glob("*.h5")) if (split_dir / modality).is_dir() else []:
            if p.resolve() not in listed:
                problems.append(f"file {p}: shard not listed in the manifest")
    if "image" in manifest.get("shards", {}) and "text" in manifest.get("shards", {}):
        orphans = sorted(caption_images - image_ids)
        if orphans:
            problems.append(f"file {split_dir / MANIFEST}: {len(orphans)} captions name images absent from the "
                            f"image shards, e.g. {orphans[:3]}")
    return problems


def _check_text(f, entry: dict, path: Path, problems: list[str]) -> tuple[list[str], list[str]]:
    missing = [n for n in TEXT_SETS if n not in f]
    if missing:
        problems.append(f"file {path}: datasets missing: {missing}")
        return [], []
    c, t = f["caption_ids"].shape[0], f["states"].shape[0]
    offsets = f["offsets"][()]
    if offsets.shape != (c + 1,):
        problems.append(f"file {path}: offsets has {offsets.shape[0]} entries for {c} captions (want {c + 1})")
    elif offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != t:
        problems.append(f"file {path}: offsets not monotone from 0 to the token count {t}")
    for name, want in (("token_ids", (t,)), ("char_spans", (t, 2)), ("image_ids", (c,)), ("truncated", (c,))):
        if f[name].shape != want:
            problems.append(f"file {path}: {name} has shape {f[name].shape}, want {want}")
    if "count" in entry and entry["count"] != c:
        problems.append(f"file {path}: holds {c} captions, the manifest says {entry['count']}")
    if "tokens" in entry and entry["tokens"] != t:
        problems.append(f"file {path}: holds {t} tokens, the manifest says {entry['tokens']}")
    ids = decode_ids(f["caption_ids"][()])
    _check_finite(f["states"], path, problems, lambda row: ids[caption_of_token(offsets, row)])
    return ids, decode_ids(f["image_ids"][()])


def _check_image(f, entry: dict, path: Path, problems: list[str], class_token: bool = True) -> list[str]:
    missing = [n for n in IMAGE_SETS if n not in f]
    if missing:
        problems.append(f"file {path}: datasets missing: {missing}")
        return []
    n, m = f["patches"].shape[0], f["patches"].shape[1]
    grid = (int(f.attrs.get("grid_h", -1)), int(f.attrs.get("grid_w", -1)))
    if grid[0] * grid[1] != m:
        problems.append(f"file {path}: {m} patches per image but the grid is {grid}")
    if f["prefix"].shape[:1] != (n,) or f["prefix"].shape[1] != int(f.attrs.get("num_prefix_tokens", -1)):
        problems.append(f"file {path}: prefix has shape {f['prefix'].shape}, inconsistent with {n} images")
    if "class_token" in f.attrs and (int(f.attrs["class_token"]) != 0 or f["prefix"].shape[1] == 0):
        problems.append(f"file {path}: class_token attribute {f.attrs['class_token']!r} is written only as 0, "
                        f"for prefix tokens without a class token")
    elif f["prefix"].shape[1] > 0 and prefix_has_class_token(f.attrs) != bool(class_token):
        problems.append(f"file {path}: prefix token 0 {'is' if prefix_has_class_token(f.attrs) else 'is not'} "
                        f"a class token here, but the manifest's image encoder says the opposite")
    if f["image_ids"].shape != (n,) or f["sizes"].shape != (n, 2):
        problems.append(f"file {path}: image_ids/sizes do not have one row per image ({n})")
    if "count" in entry and entry["count"] != n:
        problems.append(f"file {path}: holds {n} images, the manifest says {entry['count']}")
    ids = decode_ids(f["image_ids"][()])
    _check_finite(f["patches"], path, problems, ids.__getitem__)
    _check_finite(f["prefix"], path, problems, ids.__getitem__)
    return ids


def _check_finite(ds, path: Path, problems: list[str], item_of_row) -> None:
    if ds.shape[0] == 0:
        return
    row_bytes = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
    step = max(1, BLOCK_BYTES // row_bytes)
    for start in range(0, ds.shape[0], step):
        row = first_bad_row(ds[start:start + step])
        if row is not None:
            bad = start + row
            try:
                item = item_of_row(bad)
            except IndexError:   # offsets or ids that disagree with the rows: reported on their own
                item = "?"
            problems.append(f"file {path}: non-finite values in {ds.name.lstrip('/')} (first at row {bad}) "
                            f"in item {item}")
            return
