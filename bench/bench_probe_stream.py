"""Probes that stream, at MNLI's size: the real offline encoder on a sample of generated MNLI pairs, then a
393 702-pair text cache of random states streamed through the probe, with time and peak memory.

    python bench/bench_probe_stream.py [--sample 2000] [--items 393702] [--mean-tokens 40] [--target-items 393702]

1. Sample: `--sample` generated MNLI pairs (pipeline/downstream/fixtures.py) tokenised and cached by the
   real offline:minilm, as `groundedbert evaluate glue --mode probe` caches them: pairs/s, tokens and bytes a
   pair, and the extraction time extrapolated to `--items` pairs (by tokens, the encoder's cost).
2. Full size: a text cache of `--items` pairs of random float16 states (scale fixture, not a dataset), each
   pair `--mean-tokens` tokens on average (the sample's length distribution, rescaled: generated pairs are
   shorter than MNLI's), read with downstream.memory_budget_gb = 0 so it streams. The grounded probe (head on
   [h; f_g(h)], f_g of the default shape) trains one epoch and scores a 9 815-pair dev set (MNLI
   dev-matched's size). Reported: the pooled-feature pass (reads every shard), the epoch, peak RSS/PSS,
   and the whole `--mode probe` run extrapolated (downstream.probe_epochs epochs, 3 variants x seeds).
Each measured part runs in its own process; prints JSON lines; the caches are deleted afterwards.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale_common import PeakMemory, emit, gib  # noqa: E402

MNLI_DEV_MATCHED = 9_815


def sample_run(root: Path, n: int) -> dict:
    """Generated MNLI pairs through the real encoder into a probe cache, as tasks.evaluate_glue does."""
    from pipeline.config import resolve
    from pipeline.downstream.features import glue_items, source_of, tokenize_pairs
    from pipeline.downstream.fixtures import write_glue_task
    from pipeline.downstream.glue import load_task, task_file
    from pipeline.downstream.tasks import cached_bank
    from pipeline.encoders import load_text_encoder

    cfg = resolve(None, [])["downstream"]
    folder = write_glue_task("mnli", root / "glue", n_train=n, n_dev=8)
    spec, train, _ = load_task("mnli", folder)
    enc = load_text_encoder("offline:minilm", max_length=cfg["max_length"])
    with PeakMemory() as peak:
        t = time.perf_counter()
        inputs = tokenize_pairs(train, enc.tokenizer, cfg["max_length"])
        bank = cached_bank(glue_items(train, inputs), enc, root / "cache", task="mnli", split="train",
                           source=source_of(task_file(spec, folder, "train.tsv"), kind="glue-pair",
                                            task="mnli", max_length=cfg["max_length"]), cfg=cfg)
        seconds = time.perf_counter() - t
    lengths = bank.lengths(np.arange(len(bank)))
    on_disk = sum(p.stat().st_size for p in (root / "cache").rglob("*.h5"))
    return {"what": "sample through offline:minilm", "pairs": len(bank), "seconds": round(seconds, 1),
            "pairs_per_s": round(len(bank) / seconds, 1), "tokens_per_pair": round(float(lengths.mean()), 1),
            "bytes_per_pair": round(on_disk / len(bank)), "dim": bank.dim, "peak_rss_gib": gib(peak.rss),
            "lengths": lengths.tolist()}


def probe_child(train_dir: Path, dev_dir: Path, epochs: int) -> None:
    from pipeline.config import resolve
    from pipeline.downstream.glue import TASKS
    from pipeline.grounded.vectors import TokenFeatures, pool
    from pipeline.downstream.probe import POOLED_BATCH, in_bank_order, open_bank, probe_glue
    from pipeline.modules import MLP

    config = resolve(None, [])
    cfg, tr = {**config["downstream"], "probe_epochs": epochs}, config["train"]
    ids = lambda d: json.loads((d / "manifest.json").read_text())  # noqa: E731
    item_ids = lambda d: [i for e in ids(d)["shards"]["text"] for i in _shard_ids(d / e["file"])]  # noqa: E731
    with PeakMemory() as peak:
        t = time.perf_counter()
        bank, dev = open_bank(train_dir, item_ids(train_dir), 0.0), open_bank(dev_dir, item_ids(dev_dir), 0.0)
        opened = time.perf_counter() - t
        torch.manual_seed(0)
        f_g = MLP(bank.dim, tr["hidden"], tr["d_g"], tr["layernorm"])
        y = np.random.default_rng(0).integers(0, 3, size=len(bank))
        y_dev = np.random.default_rng(1).integers(0, 3, size=len(dev))
        feats = TokenFeatures(bank.dim, f_g, False)
        t = time.perf_counter()
        def pooled_of(idx):
            rows, segments, first = bank.gather(idx)
            return pool(feats(rows), segments, first, len(idx), cfg["pooling"])

        with torch.no_grad():       # the pass probe_glue makes first: pooled [h; f_g(h)] of every pair
            in_bank_order(bank, POOLED_BATCH, pooled_of)
        pooled = time.perf_counter() - t
        t = time.perf_counter()
        scores = probe_glue(TASKS["mnli"], (bank, y), {"dev": (dev, y_dev)}, f_g, cfg=cfg, seed=0)
        run = time.perf_counter() - t
    print(json.dumps({"pairs": len(bank), "dev_pairs": len(dev), "open_s": round(opened, 1),
                      "pooled_pass_s": round(pooled, 1), "probe_run_s": round(run, 1), "epochs": epochs,
                      "peak_rss_gib": gib(peak.rss), "peak_pss_gib": gib(peak.pss),
                      "accuracy_on_random_labels": round(scores["dev/accuracy"], 3)}), flush=True)


def _shard_ids(path: Path) -> list[str]:
    from pipeline.cache.format import decode_ids, read_shard

    return decode_ids(read_shard(path, ("caption_ids",))["caption_ids"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--items", type=int, default=393_702)
    p.add_argument("--mean-tokens", type=float, default=40.0)
    p.add_argument("--target-items", type=int, default=393_702, help="task size the times are extrapolated to")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return probe_child(Path(args.child[0]), Path(args.child[1]), args.epochs)

    from pipeline.config import resolve
    from pipeline.extraction.scale_fixture import write_text_fixture

    cfg = resolve(None, [])["downstream"]
    root = Path(tempfile.mkdtemp(prefix="gb-probe-"))
    try:
        sample = sample_run(root, args.sample)
        lengths = np.asarray(sample.pop("lengths"))
        per_token_s = sample["seconds"] / lengths.sum()
        emit({**sample, "extraction_extrapolated_h": round(per_token_s * args.target_items * args.mean_tokens / 3600, 2),
              "extrapolated_to": f"{args.target_items} pairs of {args.mean_tokens} tokens"})
        rng = np.random.default_rng(0)
        scaled = np.clip(np.rint(rng.choice(lengths, size=args.items) * args.mean_tokens / lengths.mean()), 3,
                         cfg["max_length"]).astype(np.int64)
        t = time.perf_counter()
        for name, n in (("train", args.items), ("dev", MNLI_DEV_MATCHED)):
            write_text_fixture(root / "big" / name, item_ids=[f"{name}-{i:07d}" for i in range(n)],
                               lengths=scaled[:n] if name == "train" else rng.choice(scaled, size=n),
                               dim=sample["dim"], shard_size=cfg["shard_size"])
        size = sum(p.stat().st_size for p in (root / "big" / "train").rglob("*.h5"))
        emit({"what": "text fixture", "pairs": args.items, "tokens_per_pair": round(float(scaled.mean()), 1),
              "gib": gib(size), "seconds": round(time.perf_counter() - t, 1), "shard_size": cfg["shard_size"]})
        out = subprocess.run([sys.executable, __file__, "--child", str(root / "big" / "train"),
                              str(root / "big" / "dev"), "--epochs", "1"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        epoch = max(r["probe_run_s"] - r["pooled_pass_s"], 0.0)
        runs = 3 * cfg["seeds"] if cfg["control"] else 2 * cfg["seeds"]
        scale = args.target_items / args.items          # both the pass and an epoch are linear in the pairs
        whole = runs * scale * (r["pooled_pass_s"] + cfg["probe_epochs"] * epoch)
        emit({"what": "streamed grounded probe", **r, "epoch_s_estimate": round(epoch, 1),
              "whole_probe_run_h_extrapolated": round(whole / 3600, 2),
              "as": f"{runs} head trainings x (pooled pass + {cfg['probe_epochs']} epochs), "
                    f"at {args.target_items} pairs"})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
