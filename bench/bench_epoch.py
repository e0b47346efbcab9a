"""How much the feature cache buys: an epoch from the cache against the same training with the frozen
encoders run on every batch (the design this project replaces), and a per-step profile.

    python bench/bench_epoch.py --cache cache/default --data data/synth [--steps 8] [--encoder-steps 2]

Reports, for the default training configuration (params.yaml train:):
  - seconds per epoch from the cache (measured over the whole epoch, or extrapolated from --steps);
  - seconds per epoch with the encoders on every batch: PNG decode + preprocessing + ViT forward for the
    batch's images, tokenisation + text encoder forward for its captions, then the same MLP step
    (extrapolated from --encoder-steps batches, because the real thing takes tens of minutes here);
  - the ratio of the two;
  - a per-step profile from the cache: data wait, MLP forward + losses, OT plan (every solve of the
    step: matched pairs and, with the hinge on, negatives), backward + optimizer, for the configured
    solver and for POT's exact solver looped over pairs.
Writes the numbers as JSON to stdout (and to --out when given).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import add_malloc_flag, set_malloc  # noqa: E402
from pipeline.config import resolve  # noqa: E402
from pipeline.data import load_rgb, load_split, resolve_image  # noqa: E402
from pipeline.encoders import load_image_encoder, load_text_encoder  # noqa: E402
from pipeline import losses  # noqa: E402
from pipeline.modules import StageTwoModules  # noqa: E402
from pipeline.runtime import to_device  # noqa: E402
from pipeline.training.engine import forward_losses  # noqa: E402
from pipeline.training.fit import make_optimizer  # noqa: E402
from pipeline.training.reader import SplitReader, epoch_loader  # noqa: E402


class SolverClock:
    """Wraps the solver the losses call, to split the OT plan's time out of the forward pass."""

    def __init__(self):
        self.seconds = 0.0
        self._solve = losses.solve_plan

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._solve(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def timed_step(model, optimizer, batch, cfg, generator, clock: SolverClock, class_token: bool) -> dict:
    """One training step exactly as engine.train_one_epoch runs it, with a clock around each part."""
    t0 = time.perf_counter()
    clock.seconds = 0.0
    out = forward_losses(model, batch, cfg, generator, contextlib.nullcontext(), with_ot=cfg["lambda_ot"] > 0,
                         class_token=class_token)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
    optimizer.step()
    t2 = time.perf_counter()
    return {"mlp_forward_and_losses": t1 - t0 - clock.seconds, "ot_plan": clock.seconds, "backward_optimizer": t2 - t1}


def profile_from_cache(reader, cfg, steps: int, solver: str, clock: SolverClock, warmup: int = 0) -> dict:
    """Per-step times over `steps` steps (0: the whole epoch) after `warmup` untimed ones (a compiled
    solver compiles in its first steps: a one-off per process, reported apart by bench_transport.py)."""
    cfg = {**cfg, "ot_solver": solver}
    torch.manual_seed(0)
    d_t, d_v = reader.dims()
    model = StageTwoModules(d_t, d_v, cfg["d_g"], cfg["hidden"], cfg["layernorm"])
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(0)
    totals, n, items = {"data": 0.0}, 0, 0
    start = tick = time.perf_counter()
    for index, batch in enumerate(epoch_loader(reader, cfg["batch_size"], seed=[0, 0])):
        batch = to_device(batch, torch.device("cpu"))
        if index < warmup:
            timed_step(model, optimizer, batch, cfg, generator, clock, reader.class_token)
            start = tick = time.perf_counter()
            continue
        totals["data"] += time.perf_counter() - tick
        for k, v in timed_step(model, optimizer, batch, cfg, generator, clock, reader.class_token).items():
            totals[k] = totals.get(k, 0.0) + v
        n, items = n + 1, items + batch["h"].shape[0]
        tick = time.perf_counter()
        if steps and n >= steps:
            break
    wall = time.perf_counter() - start
    per_step = {k: v / n for k, v in totals.items()}
    return {"solver": solver, "steps": n, "captions": items, "seconds_per_step": wall / n,
            "captions_per_s": items / wall, "per_step": per_step,
            "fractions": {k: v / (wall / n) for k, v in per_step.items()}}


def encoders_per_batch(reader, cfg, ex, records, images_root: Path, steps: int, clock: SolverClock) -> dict:
    """The replaced design: every batch decodes its images and runs both frozen encoders, then trains."""
    text = load_text_encoder(ex["text_model"], layer=ex["text_layer"], max_length=ex["max_length"])
    image = load_image_encoder(ex["image_model"], image_size=ex["image_size"])
    by_caption = {r.caption_id: r for r in records}
    by_image = {r.image_id: r for r in records}
    torch.manual_seed(0)
    model = StageTwoModules(text.dim, image.dim, cfg["d_g"], cfg["hidden"], cfg["layernorm"])
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(0)
    n, items, enc_time = 0, 0, 0.0
    start = time.perf_counter()
    for captions in reader.plan(cfg["batch_size"], seed=[0, 0]):
        t = time.perf_counter()
        recs = [by_caption[reader.caption_ids[c]] for c in captions]
        image_ids = sorted({r.image_id for r in recs})
        pixels = torch.stack([image.preprocess(load_rgb(resolve_image(images_root, by_image[i])))
                              for i in image_ids])
        patches, prefix = image.encode(pixels)
        tokens = text.tokenize([r.text for r in recs])
        states = text.encode(tokens)
        width = max(len(s) for s in states)
        h = torch.zeros(len(states), width, text.dim)
        token_mask = torch.zeros(len(states), width, dtype=torch.bool)
        spans = torch.zeros(len(states), width, 2, dtype=torch.int32)
        for i, (s, tk) in enumerate(zip(states, tokens)):
            h[i, : len(s)], token_mask[i, : len(s)] = torch.from_numpy(s), True
            spans[i, : len(s)] = torch.from_numpy(tk.spans)
        content = token_mask & (spans[..., 1] > spans[..., 0])
        content[:, 0] = False
        slot = torch.tensor([image_ids.index(r.image_id) for r in recs])
        enc_time += time.perf_counter() - t
        batch = {"h": h, "patches": patches, "prefix": prefix, "image_slot": slot, "content_mask": content}
        timed_step(model, optimizer, batch, cfg, generator, clock, image.class_token)
        n, items = n + 1, items + len(captions)
        if n >= steps:
            break
    wall = time.perf_counter() - start
    return {"steps": n, "captions": items, "seconds_per_step": wall / n, "encoder_fraction": enc_time / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("cache/default"))
    ap.add_argument("--data", type=Path, default=Path("data/synth"), help="the synthetic dataset the cache came from")
    ap.add_argument("--split", default="train")
    ap.add_argument("--steps", type=int, default=0, help="cache steps to time (0 = the whole epoch)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps first (say 5 for sinkhorn-compiled)")
    ap.add_argument("--pot-steps", type=int, default=3, help="steps timed with POT's exact solver")
    ap.add_argument("--encoder-steps", type=int, default=2, help="batches timed with the encoders in the loop")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--set", action="append", default=[], help="configuration override, e.g. train.batch_size=64")
    ap.add_argument("--out", type=Path)
    add_malloc_flag(ap)
    args = ap.parse_args()
    malloc = set_malloc(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = resolve(None, args.set)
    cfg, ex = config["train"], config["extract"]
    reader = SplitReader(args.cache / args.split, cfg["memory_budget_gb"])
    steps_per_epoch = len(reader.plan(cfg["batch_size"], seed=[0, 0]))

    clock = SolverClock()
    losses.solve_plan = clock   # the losses module looks the solver up at call time
    cached = profile_from_cache(reader, cfg, args.steps, cfg["ot_solver"], clock, args.warmup)
    pot = profile_from_cache(reader, cfg, args.pot_steps, "pot-exact", clock)
    records = load_split(args.data / "captions.jsonl", args.data, args.split)
    live = encoders_per_batch(reader, cfg, ex, records, args.data, args.encoder_steps, clock)

    epoch_cached = cached["seconds_per_step"] * steps_per_epoch
    epoch_live = live["seconds_per_step"] * steps_per_epoch
    report = {"config": {k: cfg[k] for k in ("batch_size", "d_g", "hidden", "lambda_ot", "ot_hinge_weight", "mass",
                                             "epsilon", "ot_solver")},
              "threads": torch.get_num_threads(), "malloc": malloc, "steps_per_epoch": steps_per_epoch,
              "captions": reader.num_captions, "images": reader.num_images,
              "epoch_seconds_from_cache": epoch_cached, "epoch_seconds_with_encoders": epoch_live,
              "speedup": epoch_live / epoch_cached,
              "profile_sinkhorn": cached, "profile_pot_exact": pot, "encoders_in_the_loop": live}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
