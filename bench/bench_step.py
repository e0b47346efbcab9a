"""Where a training step's time goes: FLOPs and seconds of each part against the machine's matmul peak.

    python bench/bench_step.py [--rounds 2] [--repeats 3] [--threads 1,2] [--set train.KEY=VALUE ...]

A synthetic batch of the default training shape (no cache needed): 64 captions of 10-30 tokens (mean 20;
[CLS] and [SEP] carry no content), 60 unique images of 16 x 16 patches + a class token, features of 384
(MiniLM, ViT-S/14), the default model (params.yaml train:). For each thread count, alternated over the rounds
so that a change in the machine's load hits every setting, it times:
  - each part of a step alone, forward + backward (the fastest call): f_v on every patch, f_g on every
    token, the matching head, the OT cost and loss, the OT solve, the token-wise contrastive term (today's and
    the dense einsum + amax it replaced), the optimizer step;
  - the whole step as engine.train_one_epoch runs it, and the same with the dense contrastive term ("before");
  - the validation pass of an epoch at the default's val size (240 captions): evaluate_loss's forward with
    the OT, and the pointing pass's forward + plans + similarity maps (its per-caption scoring in Python, a
    few ms, is left out: it needs ground truth);
  - a plain 2048^2 float32 torch.mm, the machine's matmul peak at that thread count.

FLOPs are counted from the shapes (`step_flops`): a Linear of N rows a -> b is 2Nab forward and 2Nab per
gradient backward (weights always; inputs only where they need a gradient); the similarity is 2 K U m d
(K content tokens) forward, and backward 2x that for the dense einsum, 4 K U d for the argmax gather; the
solver's sweeps are two batched mat-vecs, 4 P n m a sweep (counted in the step only where train.lambda_ot > 0:
at the default 0 a step solves no plan). The bound of a step is its FLOPs at the 2-thread peak; "share" =
bound / measured time. Writes JSON to stdout (and --out).
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

from machine import add_malloc_flag, machine_info, matmul_peak, set_malloc  # noqa: E402
from pipeline.config import resolve  # noqa: E402
from pipeline.losses import cosine_cost, matching_bce, token_contrastive  # noqa: E402
from pipeline.modules import StageTwoModules  # noqa: E402
from pipeline.training import engine  # noqa: E402
from pipeline.training.fit import make_optimizer  # noqa: E402
from pipeline.transport import ot_loss, solve_plan  # noqa: E402
from pipeline.transport.solver import ITERS_PER_SPREAD, partial_ot  # noqa: E402

D_T = D_V = 384
PATCHES = 256


def synthetic_batch(captions: int = 64, images: int = 60, seed: int = 0) -> dict:
    """A batch shaped like the default's: every image named by at least one caption, lengths 10-30."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, 31, (captions,), generator=gen)
    n = int(lengths.max())
    h = torch.randn(captions, n, D_T, generator=gen)
    positions = torch.arange(n)[None, :]
    h[positions >= lengths[:, None]] = 0.0
    content = (positions >= 1) & (positions < lengths[:, None] - 1)
    slot = torch.cat([torch.arange(images), torch.randint(0, images, (captions - images,), generator=gen)])
    return {"h": h, "patches": torch.randn(images, PATCHES, D_V, generator=gen),
            "prefix": torch.randn(images, 1, D_V, generator=gen), "image_slot": slot, "content_mask": content,
            "caption_index": torch.arange(captions)}


def dense_token_contrastive(g, v, token_mask, image_slot, temperature, unit_vectors=False):
    """The contrastive term as it was before the argmax gather: einsum over every (caption, image, token,
    patch) cosine, amax, autograd's backward through both. (Normalising unit vectors again changes nothing.)"""
    gn = F.normalize(g.float(), dim=-1, eps=1e-8)
    vn = F.normalize(v.float(), dim=-1, eps=1e-8)
    best = torch.einsum("bnd,umd->bunm", gn, vn).amax(dim=-1)
    weights = token_mask.float() / token_mask.float().sum(dim=1, keepdim=True).clamp_min(1.0)
    return F.cross_entropy((best * weights[:, None, :]).sum(dim=-1) / temperature, image_slot)


def linear_flops(rows: int, dims: list[int], input_grad: bool) -> tuple[float, float]:
    """(forward, backward) FLOPs of an MLP of Linears dims[0] -> dims[1] -> ... over `rows` rows."""
    fwd = bwd = 0.0
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        fwd += 2 * rows * a * b
        bwd += 2 * rows * a * b * (2 if (i > 0 or input_grad) else 1)
    return fwd, bwd


def step_flops(batch: dict, cfg: dict, pairs: int, sweeps: int) -> dict:
    """FLOPs of each part of one step, (forward, backward), from the shapes (see the module docstring)."""
    B, n, _ = batch["h"].shape
    U, m, _ = batch["patches"].shape
    K = int(batch["content_mask"].sum())
    H, d = cfg["hidden"], cfg["d_g"]
    k = cfg["negatives"]
    return {
        "f_v": linear_flops(U * m + U, [D_V, H, d], input_grad=False),
        "f_g": linear_flops(B * n, [D_T, H, d], input_grad=False),
        "matching": linear_flops(B * (1 + k), [D_T + 2 * d, H, 1], input_grad=True),
        "ot_cost_and_loss": (2 * pairs * n * m * d, 4 * pairs * n * m * d),
        "ot_solve": (4 * pairs * n * m * sweeps, 0.0),
        "local_contrast": (2 * K * U * m * d, 4 * K * U * d),
        "local_contrast_dense": (2 * B * n * U * m * d, 4 * B * n * U * m * d),
    }


def best_seconds(fn, repeats: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of the fastest of `repeats` calls after a warm-up call (first calls
    allocate and pick kernels). The fastest, not the median: on a shared machine the others' load only ever
    adds time. CPU time counts both threads at 2 threads, spinning included."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def make_parts(model, optimizer, batch, cfg, class_token: bool) -> tuple[dict, int, int]:
    """Callables that each run one part forward + backward on this batch's real intermediate tensors."""
    with torch.no_grad():
        p0 = model.global_token(batch["prefix"], batch["patches"], class_token=class_token)
        g, v, t0, vbar = model(batch["h"], batch["patches"], p0)
    slot, content = batch["image_slot"], batch["content_mask"]
    rows = content.any(1).nonzero().squeeze(1)
    neg = torch.roll(slot, 1)
    pairs_g = torch.cat([g[rows], g[rows]])
    pairs_v = torch.cat([v[slot[rows]], v[neg[rows]]])
    pairs_mask = torch.cat([content[rows], content[rows]])
    ot_args = dict(mass=cfg["mass"], epsilon=cfg["epsilon"], solver=cfg["ot_solver"], max_iter=cfg["ot_max_iter"],
                   tol=cfg["ot_tol"], patch_capacity=cfg["patch_capacity"])
    cost0 = cosine_cost(pairs_g, pairs_v)
    all_cols = torch.ones(pairs_v.shape[:2], dtype=torch.bool)
    plan = solve_plan(cost0, pairs_mask, all_cols, **ot_args)
    cols = all_cols.double()
    b = cfg["patch_capacity"] * cols / cols.sum(1, keepdim=True) if cfg["patch_capacity"] != 1.0 else None
    sweeps = partial_ot(cost0, pairs_mask, all_cols, cfg["mass"], cfg["epsilon"], b=b, max_iter=cfg["ot_max_iter"],
                        tol=cfg["ot_tol"], iters_per_spread=ITERS_PER_SPREAD).iterations

    def leaf(x):
        return x.detach().clone().requires_grad_()

    def f_v():
        (model.f_v(batch["patches"]).sum() + model.f_v(p0).sum()).backward()

    def f_g():
        model.f_g(batch["h"]).sum().backward()

    t0l, vl = leaf(t0), leaf(vbar)

    def matching():
        pos = model.f_c(t0l, vl[slot])
        negl = model.f_c(t0l[:, None, :], vl[neg][:, None, :])
        matching_bce(pos, negl, torch.ones_like(negl, dtype=torch.bool)).backward()

    gl, vpl = leaf(pairs_g), leaf(pairs_v)

    def ot_cost_and_loss():
        ot_loss(cosine_cost(gl, vpl), plan, cfg["mass"]).mean().backward()

    def ot_solve():
        solve_plan(cost0, pairs_mask, all_cols, **ot_args)

    gr, vr = leaf(g[rows]), leaf(v)

    def local(fn):
        return lambda: fn(gr, vr, content[rows], slot[rows], cfg["local_contrastive_temperature"]).backward()

    out = engine.forward_losses(model, batch, cfg, torch.Generator().manual_seed(0), contextlib.nullcontext(),
                                with_ot=True, class_token=class_token)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()

    def optim():
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()

    parts = {"f_v": f_v, "f_g": f_g, "matching": matching, "ot_cost_and_loss": ot_cost_and_loss,
             "ot_solve": ot_solve, "local_contrast": local(token_contrastive),
             "local_contrast_dense": local(dense_token_contrastive), "optimizer": optim}
    return parts, len(pairs_g), sweeps


def whole_step(model, optimizer, batch, cfg, class_token: bool, contrastive) -> callable:
    generator = torch.Generator().manual_seed(0)

    # Every module that imported the term by name (the engine, or the local-score dispatch it calls).
    holders = [m for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("pipeline.") and m.__name__ != "pipeline.losses"
               and getattr(m, "token_contrastive", None) is token_contrastive]

    def step():
        for m in holders:
            m.token_contrastive = contrastive
        try:
            out = engine.forward_losses(model, batch, cfg, generator, contextlib.nullcontext(),
                                        with_ot=cfg["lambda_ot"] > 0, class_token=class_token)
        finally:
            for m in holders:
                m.token_contrastive = token_contrastive
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
    return step


def validation_passes(model, batches, cfg, class_token: bool) -> dict:
    """An epoch's validation: evaluate_loss's forward with the OT over the val batches, and the pointing
    pass's forward, plans and similarity maps (alignment_pass without its per-caption scoring)."""
    from pipeline.evaluation.alignment import plan_settings, solve_plans
    settings = plan_settings(cfg)

    @torch.no_grad()
    def loss_pass():
        model.eval()
        generator = torch.Generator().manual_seed(0)
        for batch in batches:
            engine.forward_losses(model, batch, cfg, generator, contextlib.nullcontext(), with_ot=True,
                                  class_token=class_token)
        model.train()

    @torch.no_grad()
    def pointing_pass():
        model.eval()
        for batch in batches:
            p0 = model.global_token(batch["prefix"], batch["patches"], class_token=class_token)
            g, v, _, _ = model(batch["h"], batch["patches"], p0)
            gk, vk, ck = g, v[batch["image_slot"]], batch["content_mask"]
            solve_plans(gk, vk, ck, settings)
            (F.normalize(gk, dim=-1) @ F.normalize(vk, dim=-1).transpose(1, 2)).numpy()
        model.train()
    return {"val_loss_pass": loss_pass, "val_pointing_pass": pointing_pass}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the thread counts, alternated")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each part per round (the fastest counts)")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, alternated each round")
    ap.add_argument("--set", action="append", default=[], help="configuration override, e.g. train.hidden=256")
    ap.add_argument("--out", type=Path)
    add_malloc_flag(ap)
    args = ap.parse_args()
    malloc = set_malloc(args)
    print(machine_info(), file=sys.stderr)
    cfg = resolve(None, args.set)["train"]
    threads = [int(t) for t in args.threads.split(",")]
    torch.manual_seed(0)
    batch = synthetic_batch(cfg["batch_size"])
    val_batches = [synthetic_batch(c, c * 60 // 64, seed=1 + i) for i, c in enumerate([64, 64, 64, 48])]
    model = StageTwoModules(D_T, D_V, cfg["d_g"], cfg["hidden"], cfg["layernorm"])
    optimizer = make_optimizer(model, cfg)
    parts, pairs, sweeps = make_parts(model, optimizer, batch, cfg, class_token=True)
    flops = step_flops(batch, cfg, pairs, sweeps)
    jobs = {**parts, "step": whole_step(model, optimizer, batch, cfg, True, token_contrastive),
            "step_dense_before": whole_step(model, optimizer, batch, cfg, True, dense_token_contrastive),
            **validation_passes(model, val_batches, cfg, True)}
    times = {t: {name: [] for name in [*jobs, "matmul_peak_flops"]} for t in threads}
    cpu = {t: {name: [] for name in jobs} for t in threads}
    for _ in range(args.rounds):
        for t in threads:
            torch.set_num_threads(t)
            times[t]["matmul_peak_flops"].append(1.0 / matmul_peak(torch.float32, seconds=1.5))
            for name, fn in jobs.items():
                wall, used = best_seconds(fn, args.repeats)
                times[t][name].append(wall)
                cpu[t][name].append(used)
    peak2 = 1.0 / min(times[max(threads)]["matmul_peak_flops"])
    # The step's own parts: without the OT loss (train.lambda_ot = 0, the default) a step solves no plan, so the
    # OT parts are timed alone but not counted in the step's FLOPs or its bound.
    in_step = [p for p in flops if cfg["lambda_ot"] > 0 or not p.startswith("ot_")]
    step_parts = [p for p in in_step if p != "local_contrast_dense"]
    total = {"step": sum(sum(flops[p]) for p in step_parts),
             "step_dense_before": sum(sum(flops[p]) for p in in_step if p != "local_contrast")}
    report = {"machine": machine_info(), "malloc": malloc, "rounds": args.rounds,
              "shape": {"captions": batch["h"].shape[0], "tokens_padded": batch["h"].shape[1],
                        "content_tokens": int(batch["content_mask"].sum()), "images": batch["patches"].shape[0],
                        "patches": PATCHES, "ot_pairs": pairs, "ot_sweeps": sweeps},
              "gflop": {p: [round(f / 1e9, 3) for f in fb] for p, fb in flops.items()},
              "gflop_step": {k: round(v / 1e9, 2) for k, v in total.items()},
              "bound_s_at_2_threads_peak": {k: round(v / peak2, 4) for k, v in total.items()},
              "threads": {}}
    for t in threads:
        med = {name: min(v) for name, v in times[t].items()}
        peak = 1.0 / med.pop("matmul_peak_flops")
        row = {"matmul_peak_gflops": round(peak / 1e9, 1), "seconds": {k: round(v, 4) for k, v in med.items()},
               "cpu_seconds": {k: round(min(v), 4) for k, v in cpu[t].items()},
               "gflops": {p: round(sum(flops[p]) / med[p] / 1e9, 1) for p in flops},
               "share_of_this_peak": {p: round(sum(flops[p]) / med[p] / peak, 3) for p in flops}}
        for k in total:
            row["share_of_this_peak"][k] = round(total[k] / med[k] / peak, 3)
            row[f"{k}_share_of_2_thread_bound"] = round(total[k] / peak2 / med[k], 3)
        row["step_speedup_over_dense"] = round(med["step_dense_before"] / med["step"], 2)
        row["parts_sum_s"] = round(sum(med[p] for p in [*step_parts, "optimizer"]), 4)
        report["threads"][t] = row
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
