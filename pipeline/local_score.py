"""The local (token-wise contrastive) term, with its caption-image score chosen by `train.local_score`.

Both scores feed the same in-batch InfoNCE, text to image, each caption's own image the target:

- `maxsim` (FILIP, losses.token_contrastive): the mean over the caption's content tokens of their best
  patch's cosine; every image of the batch is a candidate.
- `partial_ot`: the transport-weighted mean cosine of the partial plan between the caption's content tokens
  and the image's patches, solved with the run's own OT settings (train.mass, epsilon, patch_capacity,
  ot_solver, ot_max_iter, ot_tol; cost 1 - cos):

      score(b, u) = sum_ij T*_ij cos(g_bi, v_uj) / sum_ij T*_ij   ( = 1 - <T*, C> / sum T* )

  The plan is solved without a graph and held constant in the backward pass (the envelope theorem, as for
  L_ot), so a token is pulled toward the patches its plan sends it to and away from where other images'
  plans send it: the plan, which the pointing game reads, is what this term trains, where max-sim trains
  each token's single best patch.

Negatives of `partial_ot`: a plan per caption and candidate image, B x U a step with every image of the batch,
so each caption is scored against its own image and its `train.local_negatives` hardest other images by
max-sim (null: every image). Hardest rather than random, because
  * InfoNCE's gradient on a negative is its softmax weight, which at a temperature of 0.07 sits on the few
    highest-scoring images; K random images out of ~60 would be mostly easy ones that teach nothing;
  * max-sim bounds the OT score from above where every token sends all its mass (s = 1 with κ >= 1: each row
    of T carries 1/n, and a row's weighted mean cosine is at most its best patch's), and stays an optimistic
    estimate below s = 1; so the images it drops are ones the plan would also score low, and the truncated
    softmax stays close to the full batch's (bench/bench_local_score.py measures the share it keeps);
  * it is deterministic, so a step does not depend on the generator; mining is one max-sim pass without a
    graph, a fraction of the max-sim term's own forward and backward.
`maxsim` always scores every image of the batch: all U scores come out of one product anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.losses import maxsim_scores, token_contrastive, unit
from pipeline.runtime import torch_threads
from pipeline.transport import solve_plan

LOCAL_SCORES = ("maxsim", "partial_ot")
# On the CPU the plans are solved a few captions at a time: every sweep reads the batch's kernel twice, and a
# kernel that stays in the processor's cache sweeps faster than one streamed from memory. On a
# GPU one batch keeps the device busy and saves the per-solve host syncs.
SOLVE_CHUNK_BYTES = 3 << 20


def local_contrastive(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, image_slot: torch.Tensor,
                      cfg: dict, ot_tally=None, *, unit_vectors: bool = False) -> torch.Tensor:
    """The local term for the score `cfg["local_score"]` names (cfg: the `train` section). g (B, n, d) tokens of
    B captions, v (U, m, d) patches of the batch's U images, token_mask (B, n) the content tokens, image_slot
    (B,) each caption's image. ot_tally, if given, counts the partial_ot plans that stopped before ot_tol.
    unit_vectors: g and v are already normalised (losses.unit), as training passes them."""
    name = cfg["local_score"]
    if name == "maxsim":
        return token_contrastive(g, v, token_mask, image_slot, cfg["local_contrastive_temperature"],
                                 unit_vectors=unit_vectors)
    if name == "partial_ot":
        return partial_ot_contrastive(
            g, v, token_mask, image_slot, cfg["local_contrastive_temperature"], negatives=cfg["local_negatives"],
            mass=cfg["mass"], epsilon=cfg["epsilon"], patch_capacity=cfg["patch_capacity"], solver=cfg["ot_solver"],
            max_iter=cfg["ot_max_iter"], tol=cfg["ot_tol"], threads=cfg.get("ot_num_threads", 0), ot_tally=ot_tally,
            unit_vectors=unit_vectors)
    raise ConfigError(f"train.local_score must be one of {', '.join(LOCAL_SCORES)}, got {name!r}")


def hardest_negatives(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, image_slot: torch.Tensor,
                      k: int, *, unit_vectors: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption's candidate images: column 0 its own, then its k highest-scoring other images by max-sim.
    Returns indices (B, 1 + k) into v and a mask (B, 1 + k), False where a caption has fewer than k others."""
    U = v.shape[0]
    others = image_slot[:, None] != torch.arange(U, device=image_slot.device)[None, :]
    k = min(k, U - 1)
    with torch.no_grad():   # mining only: no graph
        mined = maxsim_scores(g, v, token_mask, unit_vectors=unit_vectors)
    idx = mined.masked_fill(~others, float("-inf")).topk(k, dim=1).indices
    own = torch.ones_like(image_slot[:, None], dtype=torch.bool)
    return torch.cat([image_slot[:, None], idx], dim=1), torch.cat([own, others.gather(1, idx)], dim=1)


def transport_score(g: torch.Tensor, v: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """(P,) sum_ij T_ij cos(g_i, v_j) / sum_ij T_ij for P pairs, g (P, n, d) and v (P, m, d), with the plan
    (P, n, m) a constant: differentiable in g and v only. Float64 inputs stay float64 (gradient checks)."""
    dtype = torch.promote_types(g.dtype, torch.float32)
    cos = F.normalize(g.to(dtype), dim=-1, eps=1e-8) @ F.normalize(v.to(dtype), dim=-1, eps=1e-8).transpose(1, 2)
    return plan_mean(cos, plan)


def pack_content(g: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption's content tokens moved to the front, in order, and the rows no caption uses cut off: the
    solver's work is proportional to the rows, and [CLS], [SEP] and padding carry no mass anyway."""
    order = torch.sort((~token_mask).to(torch.int8), dim=1, stable=True).indices
    n = max(int(token_mask.sum(dim=1).max()), 1)
    order = order[:, :n]
    return g.gather(1, order[..., None].expand(-1, -1, g.shape[2])), token_mask.gather(1, order)


def plan_mean(cos: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """The plan-weighted mean of cos over the last two dimensions, the plan held constant. Padded rows carry
    exactly 0 mass, so their cosines add nothing; dividing by the mass moved (not s) keeps a plan that stopped
    short of its marginals a weighted mean."""
    plan = plan.detach().to(cos.dtype)
    return (plan * cos).sum(dim=(-2, -1)) / plan.sum(dim=(-2, -1)).clamp_min(torch.finfo(cos.dtype).tiny)


def partial_ot_contrastive(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, image_slot: torch.Tensor,
                           temperature: float, **ot) -> torch.Tensor:
    """InfoNCE of each caption over its own image and `negatives` hardest others (None: every image of the batch),
    scored by the partial-OT score (module docstring); `ot`: partial_ot_scores' keywords."""
    scores, valid, target = partial_ot_scores(g, v, token_mask, image_slot, **ot)
    return F.cross_entropy((scores / temperature).masked_fill(~valid, float("-inf")), target)


def partial_ot_scores(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, image_slot: torch.Tensor, *,
                      negatives: int | None, mass: float, epsilon: float, patch_capacity: float,
                      solver: str = "sinkhorn", max_iter: int = 1000, tol: float = 1e-6, threads: int = 0,
                      ot_tally=None, unit_vectors: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The partial-OT score of each caption against its candidate images: (scores (B, C), valid (B, C), target
    (B,)), the target the column of each caption's own image. negatives None (or at least U - 1): every image,
    C = U, columns in slot order; otherwise C = 1 + negatives, its own image first (`hardest_negatives`). threads:
    torch's threads for the solve alone, as for the OT loss (0: as they are). unit_vectors: g and v are already
    normalised."""
    g, token_mask = pack_content(g, token_mask)
    B, n, U, m = g.shape[0], g.shape[1], v.shape[0], v.shape[1]
    # The OT runs in float32 even under autocast (float64 stays float64): the cost's small differences decide
    # the plan.
    with torch.autocast(device_type=g.device.type, enabled=False):
        gn, vn = (g, v) if unit_vectors else (unit(g), unit(v))
        if negatives is None or negatives >= U - 1:
            cos = torch.einsum("bnd,umd->bunm", gn, vn)
            valid = torch.ones(B, U, dtype=torch.bool, device=g.device)
            target = image_slot
        else:   # one product per caption and candidate
            idx, valid = hardest_negatives(gn, vn, token_mask, image_slot, negatives, unit_vectors=True)
            cos = torch.einsum("bnd,bcmd->bcnm", gn, vn[idx])
            target = torch.zeros(B, dtype=torch.long, device=g.device)
        C = cos.shape[1]
        cost, rows = (1.0 - cos).detach(), token_mask[:, None, :].expand(B, C, n)
        per = B if g.device.type != "cpu" else max(1, SOLVE_CHUNK_BYTES // (C * n * m * 4))
        plans, errors = [], []
        with torch_threads(threads):
            for s in range(0, B, per):
                P = min(per, B - s) * C
                plan, error = solve_plan(cost[s:s + per].reshape(P, n, m), rows[s:s + per].reshape(P, n),
                                         torch.ones(P, m, dtype=torch.bool, device=g.device), mass=mass,
                                         epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol,
                                         patch_capacity=patch_capacity, return_errors=True)
                plans.append(plan)
                errors.append(error)
        if ot_tally is not None:
            ot_tally.add(torch.cat(errors).view(B, C)[valid])
        return plan_mean(cos, torch.cat(plans).view(B, C, n, m)), valid, target
