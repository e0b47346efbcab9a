"""Captions/s of length-bucketed text extraction against plain padded batches, on captions of mixed
length, with the real offline MiniLM-L6.

    HF_HUB_OFFLINE=1 python bench/bench_extract_text.py [--captions 1024] [--batch-size 128] [--threads 2]

Three ways over the same captions and batch size:
  bucketed      what extraction does: sorted by token count, each batch padded to its own longest
  random+batch  captions in random order, each batch padded to its own longest
  random+max    captions in random order, every batch padded to max_length (a fixed-shape pipeline)
Not a test: the machine is shared, so the load average is printed beside the numbers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import add_malloc_flag, machine_info, set_malloc  # noqa: E402
from pipeline.encoders import load_text_encoder  # noqa: E402
from pipeline.extraction.plan import TextItem  # noqa: E402
from pipeline.extraction.text_runner import extract_text  # noqa: E402
from pipeline.runtime import autocast  # noqa: E402

WORDS = ("a the red blue green yellow small large tiny big circle square triangle star left right above below "
         "near beside behind over under striped dotted noisy background shape next to of and with on in").split()


def mixed_captions(n: int, rng) -> list[str]:
    """Mostly short captions with a long tail, like COCO plus long descriptive ones: 3 to 60 words."""
    lengths = np.clip(rng.lognormal(mean=2.4, sigma=0.6, size=n).astype(int), 3, 60)
    return [" ".join(rng.choice(WORDS, k)) for k in lengths]


def padded_to(encoder, batch, width: int) -> None:
    ids = np.full((len(batch), width), encoder.tokenizer.pad_token_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, t in enumerate(batch):
        ids[r, :len(t.ids)], mask[r, :len(t.ids)] = t.ids, 1
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode(), autocast(encoder.device, encoder.compute_dtype):
        out = encoder.model(input_ids=ids_t, attention_mask=mask_t, token_type_ids=torch.zeros_like(ids_t),
                            output_hidden_states=True)
        out.hidden_states[encoder.layer].float().numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="best of this many runs of each (the machine is shared)")
    add_malloc_flag(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_info())
    print(set_malloc(args))
    rng = np.random.default_rng(0)
    enc = load_text_encoder("offline:minilm", max_length=args.max_length, device="cpu")
    texts = mixed_captions(args.captions, rng)
    tokens = enc.tokenize(texts)
    lengths = np.array([len(t.ids) for t in tokens])
    print(f"{len(texts)} captions, tokens per caption: mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
          f"max {lengths.max()}, {sum(t.truncated for t in tokens)} truncated at {args.max_length}")
    items = [TextItem(f"c{i:06d}", "", t) for i, t in enumerate(tokens)]
    shuffled = [tokens[i] for i in rng.permutation(len(tokens))]
    random_batches = [shuffled[s:s + args.batch_size] for s in range(0, len(shuffled), args.batch_size)]
    enc.encode(tokens[:8])  # warm-up
    from pipeline.encoders.text import length_batches
    cells = {"bucketed": sum(len(b) * max(lengths[i] for i in b) for b in length_batches(list(lengths), args.batch_size)),
             "random+batch": sum(len(b) * max(len(t.ids) for t in b) for b in random_batches),
             "random+max": len(tokens) * args.max_length}
    print("token positions computed (with padding): " + ", ".join(
        f"{k} {v} ({v / lengths.sum():.2f}x the real tokens)" for k, v in cells.items()))

    def bucketed():
        with tempfile.TemporaryDirectory() as tmp:  # the real path: bucketing, reordering, HDF5 write
            extract_text(items, enc, Path(tmp), shard_size=len(items), batch_size=args.batch_size, progress=False)

    ways = {"bucketed": bucketed,
            "random+batch": lambda: [enc.encode(b) for b in random_batches],
            "random+max": lambda: [padded_to(enc, b, args.max_length) for b in random_batches]}
    best = {}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    for name, secs in best.items():
        print(f"{name:13s} {len(items) / secs:8.1f} captions/s  ({secs:.2f}s; "
              f"{best['bucketed'] and secs / best['bucketed']:.2f}x the bucketed time)")
    print(f"speed-up of bucketing: {best['random+batch'] / best['bucketed']:.2f}x over random order padded per batch, "
          f"{best['random+max'] / best['bucketed']:.2f}x over padding to max_length")
    print(machine_info().split("; ")[-1])


if __name__ == "__main__":
    main()
