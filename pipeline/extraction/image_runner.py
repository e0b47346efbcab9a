"""Image extraction: unique images -> image shards, decoding on a thread pool or in DataLoader workers.

With num_workers=0 (the default) the main process decodes (`load_rgb`) and preprocesses each batch just
before encoding it, on a pool of as many threads as torch uses (Pillow and numpy release the GIL): on a
CPU the encoder already keeps every core busy, and worker processes decoding beside it only preempt its
threads, which then wait for each other at every operator (bench/RESULTS.md). With
num_workers > 0, DataLoader workers decode while the main process runs the encoder, so a GPU need not wait
for JPEG decoding. A bad image does not kill a worker: the worker returns the
DataError as data and the main process applies the --on-error policy, so 'fail' stops with the
file, the item and the reason, and 'skip' leaves the image out of its shard and records it in the
shard's `skipped` attribute (JSON), where finalisation and the text pass find it again on any rerun.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.cache.format import shard_path, write_image_shard
from pipeline.data import load_rgb
from pipeline.errors import BadItems, DataError
from pipeline.extraction.plan import ImageItem, shard_ranges
from pipeline.extraction.timing import Timer


class DecodeDataset(Dataset):
    """Picklable: items, the images root and the encoder's preprocess travel to the workers."""

    def __init__(self, items: list[ImageItem], images_root: Path, preprocess):
        self.items, self.root, self.preprocess = items, Path(images_root), preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        path = Path(item.path) if Path(item.path).is_absolute() else self.root / item.path
        notes = []   # problems that leave the image usable (a broken EXIF block): reported, not skipped
        try:
            img = load_rgb(path, item=f"image {item.image_id}", warnings_out=notes)
        except DataError as e:
            return index, None, None, e.reason, []
        return index, self.preprocess(img), img.size, None, notes


def collate(rows):
    good = [r for r in rows if r[1] is not None]
    pixels = torch.stack([r[1] for r in good]) if good else None
    return {"index": [r[0] for r in good], "pixels": pixels, "sizes": [r[2] for r in good],
            "bad": [(r[0], r[3]) for r in rows if r[1] is None], "warnings": [(r[0], r[4]) for r in rows if r[4]]}


def _worker_init(_):
    torch.set_num_threads(1)  # decoding is per-image work; threads would only fight the encoder


def extract_images(items: list[ImageItem], encoder, images_root: Path, split_dir: Path, *, shard_size: int,
                   batch_size: int, num_workers: int = 2, storage_dtype: str = "float16",
                   shards: list[int] | None = None, policy: BadItems | None = None, progress: bool = True) -> dict:
    """Compute the listed shards (default: all) not on disk yet; `items` sorted by id. Returns timings."""
    policy = policy or BadItems("fail")
    ranges = shard_ranges(len(items), shard_size)
    todo = [i for i in (range(len(ranges)) if shards is None else shards)
            if not shard_path(split_dir, "image", i).exists()]
    timer = Timer()
    if not todo:
        return timer.summary()
    # One loader over every shard still to do (workers start once); no batch straddles two shards.
    batches, owner = [], []
    for i in todo:
        start, stop = ranges[i]
        for s in range(start, stop, batch_size):
            batches.append(list(range(s, min(s + batch_size, stop))))
            owner.append(i)
    pin = encoder.device.type == "cuda"
    dataset = DecodeDataset(items, images_root, encoder.preprocess)
    if num_workers > 0:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                            pin_memory=pin, worker_init_fn=_worker_init, prefetch_factor=4, persistent_workers=False)
    else:
        loader = _decoded_in_threads(dataset, batches, torch.get_num_threads())
    acc = _new_acc()
    total = sum(ranges[i][1] - ranges[i][0] for i in todo)
    with tqdm(total=total, unit="img", desc="image", disable=not progress, smoothing=0.1) as bar:
        it = iter(loader)
        for b, shard in enumerate(owner):
            with timer.phase("read"):
                batch = next(it)
            for index, reason in batch["bad"]:
                item = items[index]
                policy.handle(DataError(reason, file=str(_abs(images_root, item)), item=f"image {item.image_id}"))
                # Recorded with the path as the captions file gives it: shard bytes must not depend on
                # where the images folder happens to be mounted.
                acc["skipped"].append({"file": item.path, "item": f"image {item.image_id}", "image_id": item.image_id,
                                       "reason": reason})
            for index, notes in batch["warnings"]:   # the path as the captions file gives it, as for skipped ones
                acc["warnings"] += [{**note, "file": items[index].path, "image_id": items[index].image_id}
                                    for note in notes]
            if batch["pixels"] is not None:
                with timer.phase("infer"):
                    patches, prefix = encoder.encode(batch["pixels"].to(encoder.device, non_blocking=pin))
                    acc["patches"].append(patches.to(torch.float32).cpu().numpy().astype(storage_dtype))
                    acc["prefix"].append(prefix.to(torch.float32).cpu().numpy().astype(storage_dtype))
                acc["ids"] += [items[i].image_id for i in batch["index"]]
                acc["sizes"] += batch["sizes"]
            timer.items += len(batch["index"])
            bar.update(len(batch["index"]) + len(batch["bad"]))
            if b + 1 == len(owner) or owner[b + 1] != shard:
                with timer.phase("write"):
                    _write(split_dir, shard, acc, encoder, storage_dtype)
                acc = _new_acc()
    return timer.summary()


def _decoded_in_threads(dataset: DecodeDataset, batches: list[list[int]], threads: int):
    """Batches decoded on demand by a thread pool, in order (the same batches a DataLoader would give)."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        for batch in batches:
            yield collate(list(pool.map(dataset.__getitem__, batch)))


def _abs(root: Path, item: ImageItem) -> Path:
    return Path(item.path) if Path(item.path).is_absolute() else Path(root) / item.path


def _new_acc() -> dict:
    return {"patches": [], "prefix": [], "ids": [], "sizes": [], "skipped": [], "warnings": []}


def _write(split_dir: Path, shard: int, acc: dict, encoder, storage_dtype: str) -> None:
    m, p, d = encoder.grid[0] * encoder.grid[1], encoder.num_prefix_tokens, encoder.dim
    patches = np.concatenate(acc["patches"]) if acc["patches"] else np.zeros((0, m, d), storage_dtype)
    prefix = np.concatenate(acc["prefix"]) if acc["prefix"] else np.zeros((0, p, d), storage_dtype)
    sizes = np.asarray(acc["sizes"], dtype=np.int32).reshape(-1, 2)
    write_image_shard(shard_path(split_dir, "image", shard), patches=patches, prefix=prefix, image_ids=acc["ids"],
                      sizes=sizes, grid=encoder.grid, num_prefix_tokens=encoder.num_prefix_tokens,
                      class_token=encoder.class_token, storage_dtype=storage_dtype,
                      attrs={"skipped": json.dumps(acc["skipped"], sort_keys=True),
                             # Only when there are some: the shards of sound images keep their bytes.
                             **({"warnings": json.dumps(acc["warnings"], sort_keys=True)} if acc["warnings"] else {})})
