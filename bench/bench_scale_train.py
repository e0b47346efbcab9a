"""Training from a cache larger than memory: the scale fixture at about 1.3x this machine's memory, streamed
at num_workers 0, 1 and 2, against the same model on a small fixture held in memory.

    python bench/bench_scale_train.py                      # 1.3x memory, in /tmp/gb-scale; deleted afterwards
    python bench/bench_scale_train.py --gb 8 --steps 40 --repeat 2 --keep --cache /tmp/gb-scale/train

Prints JSON lines: the fixture (seconds to write, bytes per image and per caption), one line per run
(steps/s, captions/s, the share of the time spent waiting for data, CPU seconds a step over the process and
its workers, peak RSS and PSS of them), and a summary over the --repeat rounds (medians: streamed / in-memory
rate and CPU per step, an epoch of COCO's Karpathy train split extrapolated). On a machine shared with other
jobs the wall-clock rates move with their load; the CPU seconds a step much less.
Each run is its own process, so one run's memory never shows in another's peak. The model and the
training step are the default configuration's (params.yaml train:), step for step as `fit` runs them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale_common import PeakMemory, emit, gib, tree_cpu_seconds  # noqa: E402

COCO_CAPTIONS, COCO_IMAGES = 566_747, 113_287   # Karpathy train split (+ restval)
BYTES_PER_IMAGE_GUESS = 260_000                  # ViT-S/14 patches + 5 MiniLM captions, float16: sizes the fixture


def child(args) -> None:
    """One measured run: `--steps` training steps after 3 untimed ones, memory sampled throughout."""
    from pipeline.config import resolve
    from pipeline.modules import StageTwoModules
    from pipeline.runtime import to_device
    from pipeline.training.engine import forward_losses
    from pipeline.training.fit import make_optimizer
    from pipeline.training.reader import SplitReader, epoch_loader

    cfg = resolve(None, [])["train"]
    with PeakMemory() as peak:
        t_open = time.perf_counter()
        reader = SplitReader(Path(args.cache), args.budget)
        opened = time.perf_counter() - t_open
        torch.manual_seed(0)
        d_t, d_v = reader.dims()
        model = StageTwoModules(d_t, d_v, cfg["d_g"], cfg["hidden"], cfg["layernorm"])
        optimizer = make_optimizer(model, cfg)
        generator = torch.Generator().manual_seed(0)
        wait = steps = captions = 0
        start = tick = time.perf_counter()
        loader = epoch_loader(reader, cfg["batch_size"], seed=[0, 0], num_workers=args.workers)
        for index, batch in enumerate(loader):
            arrived = time.perf_counter()
            batch = to_device(batch, torch.device("cpu"))
            out = forward_losses(model, batch, cfg, generator, contextlib.nullcontext(),
                                 with_ot=cfg["lambda_ot"] > 0, class_token=reader.class_token)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            optimizer.step()
            if index < 3:       # first shards, worker start-up: not the steady state
                start = tick = time.perf_counter()
                cpu0 = tree_cpu_seconds()
                continue
            wait += arrived - tick
            steps, captions = steps + 1, captions + batch["h"].shape[0]
            tick = time.perf_counter()
            if steps >= args.steps:
                break
        wall = time.perf_counter() - start
        cpu = tree_cpu_seconds() - cpu0       # before the workers exit, so their share is counted
        del loader
    print(json.dumps({"mode": "in memory" if reader.in_memory else "streamed", "num_workers": args.workers,
                      "memory_budget_gb": args.budget, "cache_gib": gib(reader.nbytes), "open_s": round(opened, 2),
                      "steps": steps, "steps_per_s": round(steps / wall, 3), "captions_per_s": round(captions / wall, 1),
                      "data_wait_fraction": round(wait / wall, 3), "cpu_s_per_step": round(cpu / steps, 3), "peak_rss_gib": gib(peak.rss),
                      "peak_pss_gib": gib(peak.pss), "processes": peak.workers + 1,
                      "lambda_ot": cfg["lambda_ot"], "batch_size": cfg["batch_size"]}), flush=True)


def run_child(cache: Path, workers: int, budget: float, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "--cache", str(cache), "--workers", str(workers),
                          "--budget", str(budget), "--steps", str(steps)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run failed (num_workers={workers}, budget={budget}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_fixture(split_dir: Path, images: int) -> dict:
    from pipeline.extraction.scale_fixture import write_scale_fixture

    t0 = time.perf_counter()
    manifest = write_scale_fixture(split_dir, images=images, captions_per_image=5, tokens=16, text_dim=384,
                                   image_dim=384, grid=(16, 16), prefix=1, shard_size=1024, seed=0)
    seconds = time.perf_counter() - t0
    size = {m: sum((split_dir / e["file"]).stat().st_size for e in entries) for m, entries in manifest["shards"].items()}
    total = sum(size.values())
    return {"what": "scale fixture", "path": str(split_dir), "images": images, "captions": images * 5,
            "gib": gib(total), "seconds": round(seconds, 1), "write_mib_per_s": round(total / 2**20 / seconds, 1),
            "bytes_per_image": round(size["image"] / images), "bytes_per_caption": round(size["text"] / (images * 5)),
            "tokens": manifest["totals"]["text"]["tokens"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default="/tmp/gb-scale/train", help="split folder of the big fixture (written if absent)")
    p.add_argument("--gb", type=float, default=None, help="fixture size (default: 1.3x this machine's memory)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per run")
    p.add_argument("--workers", default="0,1,2", help="num_workers values to stream with")
    p.add_argument("--budget", type=float, default=4.0, help="train.memory_budget_gb of the streamed runs")
    p.add_argument("--repeat", type=int, default=1, help="rounds of (each num_workers, then in memory), alternated")
    p.add_argument("--keep", action="store_true", help="keep the big fixture (it is deleted otherwise)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workers = int(args.workers)
        return child(args)

    import os
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gb = args.gb or 1.3 * memory / 2**30
    cache = Path(args.cache)
    emit({"what": "machine", "memory_gib": gib(memory), "cpus": os.cpu_count(),
          "disk_free_gib": gib(shutil.disk_usage(cache.parent.parent if not cache.exists() else cache).free)
          if cache.parent.parent.exists() else None})
    created = []        # only what this run wrote is deleted at the end, never a cache it was pointed at
    if not (cache / "manifest.json").exists():
        created.append(cache)
        emit(write_fixture(cache, int(gb * 2**30 / BYTES_PER_IMAGE_GUESS)))
    small = cache.parent.parent / (cache.parent.name + "-in-memory") / "train"
    try:
        if not (small / "manifest.json").exists():
            created.append(small)
            emit({**write_fixture(small, 4096), "what": "in-memory fixture (same dims)"})
        workers = [int(x) for x in args.workers.split(",")]
        runs = {w: [] for w in workers}
        runs["in memory"] = []
        for _ in range(args.repeat):      # alternated, so a change in the machine's load hits every setting
            for w in workers:
                r = run_child(cache, w, args.budget, args.steps)
                r["bound_gib"] = args.budget + 1.5
                emit(r)
                runs[w].append(r)
            r = run_child(small, 0, 8.0, args.steps)
            emit(r)
            runs["in memory"].append(r)
        med = {k: {f: float(np.median([r[f] for r in v])) for f in ("steps_per_s", "cpu_s_per_step")}
               for k, v in runs.items()}
        mem = med.pop("in memory")
        steps_per_epoch = math.ceil(COCO_CAPTIONS / runs["in memory"][0]["batch_size"])
        emit({"what": "summary", "repeats": args.repeat, "median_steps_per_s": {**med, "in memory": mem},
              "streamed_over_in_memory_rate": {w: round(m["steps_per_s"] / mem["steps_per_s"], 3) for w, m in med.items()},
              "in_memory_over_streamed_cpu_per_step": {w: round(mem["cpu_s_per_step"] / m["cpu_s_per_step"], 3)
                                                       for w, m in med.items()},
              "max_peak_pss_gib": {w: max(r["peak_pss_gib"] for r in runs[w]) for w in workers},
              "max_peak_rss_gib": {w: max(r["peak_rss_gib"] for r in runs[w]) for w in workers},
              "coco_epoch_steps": steps_per_epoch,
              "coco_epoch_hours": {w: round(steps_per_epoch / m["steps_per_s"] / 3600, 2) for w, m in med.items()},
              "coco_epoch_hours_in_memory": round(steps_per_epoch / mem["steps_per_s"] / 3600, 2)})
    finally:
        for path in created:
            if path == small or not args.keep:
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()       # the folder above, if nothing else is in it


if __name__ == "__main__":
    main()
