"""Evaluation at COCO-test size: a 5 000-image / 25 000-caption scale fixture scored the way
`groundedbert evaluate grounding` scores a split, in memory and streamed, with time and peak memory.

    python bench/bench_scale_eval.py [--images 5000] [--captions-per-image 5] [--target-images 5000]

A smaller --images runs faster and extrapolates its time to --target-images (retrieval quadratically).

The parts are evaluate_run's own (pipeline/evaluation/grounding_eval.py): encode_split, retrieval_ranks (every
caption against every image, in blocks, twice), matching_pairs, and the alignment pass over every batch
(collapse; the fixture has no grounding.json, so no pointing game: on a real split that adds one OT plan
per grounded caption). The model is a fresh StageTwoModules of the default configuration's shape: the time
does not depend on its weights. Each budget runs in its own process; prints JSON lines.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale_common import PeakMemory, emit, gib  # noqa: E402


def child(cache: Path, budget: float) -> None:
    from pipeline.config import resolve
    from pipeline.evaluation.alignment import alignment_pass, plan_settings
    from pipeline.evaluation.metrics import retrieval
    from pipeline.evaluation.scoring import encode_split, matching_pairs, retrieval_ranks
    from pipeline.modules import StageTwoModules
    from pipeline.training.reader import SplitReader

    config = resolve(None, [])
    cfg, ev = config["train"], config["evaluate"]
    times = {}
    with PeakMemory() as peak:
        t = time.perf_counter()
        reader = SplitReader(cache, budget)
        times["open"] = time.perf_counter() - t
        torch.manual_seed(0)
        d_t, d_v = reader.dims()
        model = StageTwoModules(d_t, d_v, cfg["d_g"], cfg["hidden"], cfg["layernorm"]).eval()
        device = torch.device("cpu")
        t = time.perf_counter()
        t0, vbar, gold = encode_split(model, reader, ev["block_size"], device)
        times["encode_split"] = time.perf_counter() - t
        t = time.perf_counter()
        t2i, i2t = retrieval_ranks(model, t0, vbar, gold, ev["block_size"])
        retrieval(t2i, i2t, gold, reader.num_images)
        times["retrieval"] = time.perf_counter() - t
        t = time.perf_counter()
        matching_pairs(model, t0, vbar, gold, ev["seed"])
        times["matching"] = time.perf_counter() - t
        t = time.perf_counter()
        alignment_pass(model, reader, device, grounding=None, image_size=224, settings=plan_settings(cfg, ev),
                       batch_size=cfg["batch_size"])
        times["alignment_pass"] = time.perf_counter() - t
    print(json.dumps({"mode": "in memory" if reader.in_memory else "streamed", "memory_budget_gb": budget,
                      "images": reader.num_images, "captions": reader.num_captions, "cache_gib": gib(reader.nbytes),
                      "seconds": {k: round(v, 1) for k, v in times.items()},
                      "total_s": round(sum(times.values()), 1), "peak_rss_gib": gib(peak.rss),
                      "peak_pss_gib": gib(peak.pss)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--target-images", type=int, default=5000, help="size to extrapolate the time to")
    p.add_argument("--budgets", default="4,0", help="train.memory_budget_gb values (4: in memory; 0: streamed)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=4.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(Path(args.child), args.budget)

    from pipeline.extraction.scale_fixture import write_scale_fixture

    root = Path(tempfile.mkdtemp(prefix="gb-scale-eval-"))
    try:
        t = time.perf_counter()
        write_scale_fixture(root / "test", images=args.images, captions_per_image=args.captions_per_image,
                            tokens=16, text_dim=384, image_dim=384, grid=(16, 16), prefix=1, shard_size=1024)
        emit({"what": "fixture", "images": args.images, "captions": args.images * args.captions_per_image,
              "seconds": round(time.perf_counter() - t, 1)})
        for budget in [float(b) for b in args.budgets.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--child", str(root / "test"), "--budget", str(budget)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if args.images != args.target_images:
                # Every part is linear in the split's size but retrieval, which scores every caption against
                # every image (twice): quadratic.
                f = args.target_images / args.images
                sec = r["seconds"]
                r["extrapolated_to"] = f"{args.target_images} images, {args.target_images * args.captions_per_image} captions"
                r["extrapolated_total_s"] = round(sum(v * (f * f if k == "retrieval" else f) for k, v in sec.items()), 1)
            emit(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
