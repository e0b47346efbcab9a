"""Images/s of image extraction with the real offline DINOv2 ViT-S/14, and the fraction of this machine's
measured matrix-product peak it reaches (FLOPs per image from the encoder's own count).

    HF_HUB_OFFLINE=1 python bench/bench_extract_images.py [--images 128] [--batch-size 32] [--threads 2] \
        [--dtypes float32,bfloat16] [--modes autocast,eager,compiled] [--image-model M] [--device cuda]

Two numbers per precision and mode: the encoder alone on ready tensors (what the matmuls reach), and the
whole extraction (PNG decoding + encoder + HDF5 writes) through `extract_images`, decoding as
`extract.num_workers` says (0: a thread pool between batches; N: DataLoader worker processes).
Modes: eager and compiled are `extract.image_compile` false / true (a reduced precision casting the
weights, `extract.image_cast_weights`); autocast is the eager path with float32 weights under autocast
(`image_cast_weights: false`; float32 skips it, being the same as eager). Load + compile is timed apart.
bench/gpu_check.sh runs it on a GPU.
Not a test: the machine is shared, so the load average is printed beside the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import add_malloc_flag, machine_info, matmul_peak, set_malloc  # noqa: E402
from pipeline.encoders import load_image_encoder  # noqa: E402
from pipeline.extraction.image_runner import extract_images  # noqa: E402
from pipeline.extraction.plan import ImageItem  # noqa: E402
from pipeline.runtime import torch_dtype  # noqa: E402
from stages.extract import decode_workers  # noqa: E402


def make_images(folder: Path, n: int) -> list[ImageItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        w, h = int(rng.integers(280, 400)), int(rng.integers(240, 360))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        items.append(ImageItem(f"{i:05d}", f"{i:05d}.png"))
    return items


def encoder_only(encoder, batch_size: int, batches: int) -> float:
    pixels = torch.randn(batch_size, 3, encoder.image_size, encoder.image_size, device=encoder.device)
    encoder.encode(pixels)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        encoder.encode(pixels)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=128, help="end to end: 4 batches, so start-up weighs little")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-workers", default="0", help="as extract.num_workers: auto, 0 or N")
    ap.add_argument("--image-model", default="offline:dinov2-vits14",
                    help="as extract.image_model; random:vit_small_patch14_dinov2 has the same shape and speed "
                         "without the offline weights (a GPU machine without them)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="eager,compiled", help="any of autocast, eager, compiled")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3,
                    help="peak and encoder measured alternately this many times, best of each (the machine is shared)")
    add_malloc_flag(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_info())
    print(set_malloc(args))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        items = make_images(root, args.images)
        for name, mode in [(d, m) for d in args.dtypes.split(",") for m in args.modes.split(",")]:
            if mode == "autocast" and name == "float32":
                continue
            t0 = time.perf_counter()
            enc = load_image_encoder(args.image_model, image_size=224, device=args.device, compute_dtype=name,
                                     cast_weights=mode != "autocast", compile=mode == "compiled",
                                     batch_size=args.batch_size)
            load_s = time.perf_counter() - t0
            if mode == "compiled" and not enc.compiled:
                print(f"{name} {mode}: compilation failed (see the warning above), skipped")
                continue
            flops = enc.flops_per_image()
            peak = alone = 0.0
            for _ in range(args.rounds):  # alternated, so both see the same background load
                peak = max(peak, matmul_peak(torch_dtype(name), args.device, seconds=1.5))
                alone = max(alone, encoder_only(enc, args.batch_size, 1))
            out = Path(tmp) / f"cache-{name}-{mode}"
            t = extract_images(items, enc, root, out, shard_size=len(items), batch_size=args.batch_size,
                               num_workers=decode_workers(args.num_workers, enc.device), progress=False)
            e2e = t["items"] / t["wall_s"]
            print(f"{name} {mode} (load{' + compile' if enc.compiled else ''} {load_s:.1f} s; "
                  f"load average {os.getloadavg()[0]:.2f}): matmul peak {peak / 1e9:.0f} GFLOP/s; {flops / 1e9:.2f} GFLOP/image; "
                  f"encoder alone {alone:.2f} img/s = {alone * flops / 1e9:.0f} GFLOP/s = {alone * flops / peak:.0%} of peak; "
                  f"extraction end to end {e2e:.2f} img/s = {e2e * flops / peak:.0%} of peak "
                  f"(read {t['read']['total_s']:.2f}s, infer {t['infer']['total_s']:.2f}s, "
                  f"write {t['write']['total_s']:.2f}s over {t['wall_s']:.2f}s)")
    print(machine_info().split("; ")[-1])


if __name__ == "__main__":
    main()
