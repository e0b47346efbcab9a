"""What building a shard in memory costs (cache/format.py::atomic_h5: HDF5's core driver, then one plain write),
against h5py writing the file itself (how shards were written before a full disk had to be a clean error).

    .venv/bin/python bench/bench_shard_write.py [--images 1024] [--rounds 3] [--folder /tmp]

One image shard of the default configuration (1024 images, 16x16 patches + CLS, 384 dims, float16: 200 MB).
Prints seconds per shard (best of rounds, fsync included) and each way's peak memory above the arrays, each
measured in a process of its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline.cache.format import atomic_h5, encode_ids, put
from pipeline.io.atomic import atomic_path
from pipeline.io.hashing import file_sha256


def write_direct(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            fill(f, arrays)


def write_in_memory(path: Path, arrays: dict) -> None:
    with atomic_h5(path) as f:
        fill(f, arrays)


def fill(f: h5py.File, arrays: dict) -> None:
    put(f, "patches", arrays["patches"], chunk_rows=1)
    put(f, "prefix", arrays["prefix"], chunk_rows=1)
    put(f, "image_ids", encode_ids(arrays["ids"]))
    put(f, "sizes", arrays["sizes"])
    f.attrs["grid_h"], f.attrs["grid_w"], f.attrs["num_prefix_tokens"] = 16, 16, 1


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_arrays(n: int) -> dict:
    """Filled in slices, so that making them does not set the process's peak memory."""
    rng = np.random.default_rng(0)
    patches = np.empty((n, 256, 384), np.float16)
    for i in range(0, n, 64):
        patches[i:i + 64] = rng.standard_normal(patches[i:i + 64].shape, dtype=np.float32)
    return {"patches": patches, "prefix": patches[:, :1].copy(), "ids": [f"im{i:07d}" for i in range(n)],
            "sizes": np.full((n, 2), 640, np.int32)}


def measure(mode: str, images: int, rounds: int, folder: str) -> None:
    """One writer in this process: its best time and its peak memory above the arrays'."""
    arrays = make_arrays(images)
    base = peak_rss_mib()
    write = {"direct": write_direct, "in_memory": write_in_memory}[mode]
    path = Path(folder) / f"{mode}.h5"
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        write(path, arrays)
        times.append(time.perf_counter() - t)
    print(json.dumps({"mode": mode, "seconds": min(times), "mib": path.stat().st_size / 2**20,
                      "extra_peak_mib": peak_rss_mib() - base, "sha256": file_sha256(path)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folder", default=tempfile.gettempdir())
    ap.add_argument("--only", choices=("direct", "in_memory"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        return measure(a.only, a.images, a.rounds, a.folder)
    with tempfile.TemporaryDirectory(dir=a.folder) as tmp:
        results = []
        for mode in ("direct", "in_memory"):   # each in a process of its own: its peak memory is its own
            out = subprocess.run([sys.executable, __file__, "--only", mode, "--images", str(a.images),
                                  "--rounds", str(a.rounds), "--folder", tmp], check=True, capture_output=True,
                                 text=True)
            results.append(json.loads(out.stdout))
        for r in results:
            print(f"{r['mode']:9s}: {r['seconds']:.2f} s per shard (best of {a.rounds}, fsync included), "
                  f"{r['mib']:.0f} MiB, peak memory {r['extra_peak_mib']:+.0f} MiB above the arrays")
        print(f"identical bytes: {results[0]['sha256'] == results[1]['sha256']}")


if __name__ == "__main__":
    main()
