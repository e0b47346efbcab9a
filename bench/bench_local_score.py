"""The local term's cost per step: max-sim against the partial-OT score (pipeline/local_score.py).

    python bench/bench_local_score.py [--negatives 2 4 8 16 all] [--repeats 5] [--threads 1]

At the default shapes (B = 64 captions of up to 20 tokens, U = 60 images of 256 patches, d_g = 128) and the
default OT settings of params.yaml, on two kinds of embeddings, since the solver's sweeps grow with the
spread of the costs:
  - `random`: Gaussian g and v, as an untrained model gives (every cosine near 0);
  - `structured`: what training aims at: each image has a background texture and two objects of about nine
    patches; a caption's words name them (cosine about 0.8 to their patches) or are filler.
For each: the seconds of one forward + backward of the local term (best of --repeats) for max-sim and for
partial_ot with each --negatives, their ratio to max-sim, the same ratio for a whole step (the rest of a
step, `rest_of_step`, added to both), and how close the truncated softmax is to the full
batch's: the share of the full-batch negatives' softmax weight (partial-OT scores, over every image) that the K
hardest by max-sim hold, the same for K random ones, and the loss of each against the full batch's.
Prints JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from pipeline.config import load_defaults  # noqa: E402
from pipeline.local_score import hardest_negatives, local_contrastive, plan_mean  # noqa: E402
from pipeline.modules import StageTwoModules  # noqa: E402
from pipeline.training.engine import forward_losses  # noqa: E402
from pipeline.training.fit import make_optimizer  # noqa: E402
from pipeline.transport import solve_plan  # noqa: E402

B, U, N, M, D = 64, 60, 20, 256, 128


def embeddings(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """g (B, N, D), v (U, M, D), content mask (B, N), image slot (B,)."""
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    slot = torch.cat([torch.arange(U), torch.randint(0, U, (B - U,), generator=gen)])
    lengths = torch.randint(14, N + 1, (B,), generator=gen)
    content = torch.arange(N)[None, :] < (lengths - 1)[:, None]
    content[:, 0] = False                                               # [CLS]; [SEP] is past the end
    if kind == "random":
        return randn(B, N, D), randn(U, M, D), content, slot
    concepts, textures, filler = randn(24, D), randn(4, D), randn(D)
    v = textures[torch.randint(0, 4, (U,), generator=gen)][:, None, :] + 0.6 * randn(U, M, D)
    objects = torch.stack([torch.randperm(24, generator=gen)[:2] for _ in range(U)])       # (U, 2)
    for u in range(U):
        for k in range(2):
            at = torch.randperm(M, generator=gen)[:9]
            v[u, at] = concepts[objects[u, k]] + 0.5 * randn(9, D)
    g = filler + 1.2 * randn(B, N, D)
    for b in range(B):
        for k in range(2):                                              # three words per object
            g[b, 1 + 3 * k: 4 + 3 * k] = concepts[objects[slot[b], k]] + 0.5 * randn(3, D)
    return g, v, content, slot


def seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def full_scores(g, v, content, cfg) -> torch.Tensor:
    """(B, U) partial-OT scores of every caption against every image."""
    gn, vn = F.normalize(g, dim=-1), F.normalize(v, dim=-1)
    cos = torch.einsum("bnd,umd->bunm", gn, vn)
    plan = solve_plan((1 - cos).reshape(B * U, N, M), content[:, None].expand(B, U, N).reshape(B * U, N),
                      torch.ones(B * U, M, dtype=torch.bool), mass=cfg["mass"], epsilon=cfg["epsilon"],
                      patch_capacity=cfg["patch_capacity"], solver=cfg["ot_solver"], max_iter=cfg["ot_max_iter"],
                      tol=cfg["ot_tol"])
    return plan_mean(cos, plan.view(B, U, N, M))


def truncation(full: torch.Tensor, g, v, content, slot, cfg, k: int) -> dict:
    """How much of the full batch's softmax (full: its (B, U) scores) the K hardest-by-max-sim (and K random)
    negatives keep."""
    scores = full / cfg["local_contrastive_temperature"]
    full = F.cross_entropy(scores, slot).item()
    p = scores.softmax(dim=1)
    own = p.gather(1, slot[:, None]).squeeze(1)
    neg_mass = (1 - own).clamp_min(1e-12)
    hard, hard_ok = hardest_negatives(g, v, content, slot, k)
    others = slot[:, None] != torch.arange(U)[None, :]
    rand = torch.rand(B, U, generator=torch.Generator().manual_seed(1)).masked_fill(~others, -1).topk(k, 1).indices
    rand = torch.cat([slot[:, None], rand], 1)
    out = {}
    for name, idx, ok in (("hardest", hard, hard_ok), ("random", rand, torch.ones_like(rand, dtype=torch.bool))):
        kept = (p.gather(1, idx[:, 1:]) * ok[:, 1:]).sum(1) / neg_mass
        loss = F.cross_entropy(scores.gather(1, idx).masked_fill(~ok, float("-inf")), torch.zeros(B, dtype=torch.long))
        out[name] = {"negative_softmax_share_kept": round(kept.mean().item(), 4), "loss": round(loss.item(), 4)}
    out["full_batch_loss"] = round(full, 4)
    return out


def rest_of_step(cfg: dict, repeats: int, d_t: int = 384, d_v: int = 384) -> float:
    """Seconds of one training step without the local term (MLPs forward and backward, matching, the OT loss
    and its hinge, the optimizer) on random features of the default cache's widths. Random embeddings make
    the OT loss's plans converge in fewer sweeps than trained ones, so this undercounts the rest of a real
    step and the whole-step ratios derived from it overstate partial_ot's share (a conservative bound)."""
    torch.manual_seed(0)
    model = StageTwoModules(d_t, d_v, cfg["d_g"], cfg["hidden"], cfg["layernorm"])
    optimizer = make_optimizer(model, cfg)
    _, _, content, slot = embeddings("random")
    batch = {"h": torch.randn(B, N, d_t), "patches": torch.randn(U, M, d_v), "prefix": torch.randn(U, 1, d_v),
             "content_mask": content, "image_slot": slot}
    cfg = {**cfg, "local_contrastive_weight": 0.0}
    generator = torch.Generator().manual_seed(0)

    def step():
        out = forward_losses(model, batch, cfg, generator, contextlib.nullcontext(), with_ot=cfg["lambda_ot"] > 0,
                             class_token=True)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    return seconds(step, repeats)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--negatives", nargs="+", default=["2", "4", "8", "16"],
                    help="partial_ot's train.local_negatives values to time ('all': every image, slow)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training's default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_defaults()["train"]
    result = {"machine": machine_info(), "shapes": {"B": B, "U": U, "n": N, "m": M, "d_g": D},
              "ot": {k: cfg[k] for k in ("mass", "epsilon", "patch_capacity", "ot_solver", "ot_max_iter", "ot_tol")}}
    result["rest_of_step_s"] = rest = rest_of_step(cfg, args.repeats)
    for kind in ("random", "structured"):
        g0, v0, content, slot = embeddings(kind)
        g, v = g0.clone().requires_grad_(), v0.clone().requires_grad_()

        def step(run_cfg):
            g.grad = v.grad = None
            local_contrastive(g, v, content, slot, run_cfg).backward()

        row = {"maxsim_s": seconds(lambda: step({**cfg, "local_score": "maxsim"}), args.repeats)}
        for k in args.negatives:
            run_cfg = {**cfg, "local_score": "partial_ot", "local_negatives": None if k == "all" else int(k)}
            t = seconds(lambda: step(run_cfg), args.repeats)
            row[f"partial_ot_K{k}_s"] = t
            row[f"partial_ot_K{k}_ratio"] = round(t / row["maxsim_s"], 2)
            row[f"partial_ot_K{k}_step_ratio"] = round((rest + t) / (rest + row["maxsim_s"]), 2)
        full = full_scores(g0, v0, content, cfg)
        row["truncation"] = {k: truncation(full, g0, v0, content, slot, cfg, int(k)) for k in args.negatives
                             if k != "all"}
        result[kind] = row
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
