"""The training losses (docs/method.md) and the collapse statistic, each a small pure function.

- matching: binary cross-entropy on f_c's logit, each positive with `k` negatives from the batch;
- alignment: partial optimal transport between a caption's content tokens and its image's patches,
  L_ot = <T*, C> / s with the plan T* solved outside autograd (envelope theorem);
- local contrast: an in-batch InfoNCE whose caption-image score is token-wise (FILIP), so that each word
  is asked to be closer to its own image's patches than to other images' patches;
- collapse: the mean pairwise cosine of the grounded embeddings g within a batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.transport import ot_loss, solve_plan


# ----------------------------------------------------------------------------- matching

def pick_negatives(valid: torch.Tensor, k: int, mode: str = "random", scores: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose up to k negative images per caption among the columns where `valid` (B, U) is True.

    `random` ranks the valid columns by uniform noise, `hard` by the model's own scores (the
    highest-scoring wrong images); either way the top k are taken, so a random draw is without
    replacement. Returns column indices (B, k) and a mask (B, k) that is False where a caption has
    fewer than k valid negatives (a batch holding one image has none at all)."""
    if mode == "random":
        rank = torch.rand(valid.shape, generator=generator, device="cpu").to(valid.device)
    elif mode == "hard":
        if scores is None:
            raise ValueError("hard negatives need the batch's score matrix")
        rank = scores.detach().float()
    else:
        raise ValueError(f"negative_mode must be 'random' or 'hard', got {mode!r}")
    k = min(k, valid.shape[1])
    rank = rank.masked_fill(~valid, float("-inf"))
    idx = rank.topk(k, dim=1).indices
    return idx, valid.gather(1, idx)


def matching_bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over every labelled pair: positives (B,) with label 1, the negatives
    (B, k) that `neg_mask` keeps with label 0. Each pair weighs the same, so with k = 1 the positive
    and negative classes are balanced."""
    pos = F.binary_cross_entropy_with_logits(pos_logits.float(), torch.ones_like(pos_logits, dtype=torch.float32),
                                             reduction="sum")
    neg = F.binary_cross_entropy_with_logits(neg_logits.float(), torch.zeros_like(neg_logits, dtype=torch.float32),
                                             reduction="none")
    neg = (neg * neg_mask).sum()
    return (pos + neg) / (pos_logits.numel() + neg_mask.sum())


# ----------------------------------------------------------------------------- alignment

def unit(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last dimension, in float32 at least (float64 stays float64, for gradient checks).
    Training normalises g and v once a step and hands the unit vectors to every term (`unit_vectors=True`):
    normalising the gathered copies of each pair instead cost more than the products it fed."""
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1, eps=1e-8)


def cosine_cost(g: torch.Tensor, v: torch.Tensor, *, unit_vectors: bool = False) -> torch.Tensor:
    """C_ij = 1 - cos(g_i, v_j): g (B, n, d), v (B, m, d) -> (B, n, m), in float32 at least (float64
    stays float64, for gradient checks). unit_vectors: g and v are already `unit`'s output."""
    if not unit_vectors:
        g, v = unit(g), unit(v)
    return 1.0 - g @ v.transpose(1, 2)


def ot_alignment_loss(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, patch_mask: torch.Tensor, *,
                      mass: float, epsilon: float, solver: str = "sinkhorn", max_iter: int = 1000,
                      tol: float = 1e-6, patch_capacity: float = 1.0, return_errors: bool = False,
                      unit_vectors: bool = False) -> tuple:
    """Partial-OT alignment of caption-image pairs: g (B, n, d_g) grounded tokens, v (B, m, d_g) projected
    patches of each pair's image; token_mask (B, n) True on content tokens only ([CLS], [SEP] and
    padding carry no mass), patch_mask (B, m).

    The plan comes from the solver without a graph, so the backward pass sees <T, C> with T constant:
    by the envelope theorem that is the gradient of the OT value itself, and memory does not grow with
    the solver's iterations. Returns the loss of each pair (B,) and the plans (B, n, m); with return_errors
    also the solver's marginal error of each pair (B,), to count the plans that did not converge."""
    # The OT runs in float32 even under autocast: the cost's small differences decide the plan.
    with torch.autocast(device_type=g.device.type, enabled=False):
        cost = cosine_cost(g, v, unit_vectors=unit_vectors)
        plan, errors = solve_plan(cost.detach(), token_mask, patch_mask, mass=mass, epsilon=epsilon, solver=solver,
                                  max_iter=max_iter, tol=tol, patch_capacity=patch_capacity, return_errors=True)
        loss = ot_loss(cost, plan, mass)
        return (loss, plan, errors) if return_errors else (loss, plan)


def ot_hinge(matched: torch.Tensor, mismatched: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(max(0, margin + L_ot(caption, own image) - L_ot(caption, other image))).

    The alignment loss alone is minimised by collapse: when f_g and f_v map everything to one direction
    every cost is 0. Asking a caption's own image to be cheaper to reach than another image's by a
    margin is only satisfiable if g and v keep the information that tells images apart (the collapse
    knob of docs/method.md)."""
    return torch.relu(margin + matched - mismatched).mean()


class _BestPatch(torch.autograd.Function):
    """best[k, u] = max_j <q_k, p_uj> for K query rows q (K, d) and U images of m patches p (U, m, d).

    Forward: one (K, d) @ (d, U*m) product, the layout BLAS runs near its peak, then a max over each image's
    m columns. Backward: a max passes its gradient to its argmax alone, so dq gathers one patch per (token,
    image) and dp scatters one token per (token, image), O(K U d) work. Autograd's amax would instead build the
    dense (K, U, m) gradient and run two more products the size of the forward's. Ties: amax splits a tie's
    gradient evenly, this gives it to one of them (both are subgradients, and float features tie with
    probability zero)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        U, m, d = p.shape
        flat_p = p.reshape(U * m, d)
        best, arg = torch.mm(q, flat_p.T).view(q.shape[0], U, m).max(dim=-1)
        flat = arg + torch.arange(U, device=p.device) * m    # (K, U): rows of flat_p
        ctx.save_for_backward(q, p, flat)
        return best.to(q.dtype)   # autocast may have run the product in lower precision

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q, p, flat = ctx.saved_tensors
        U, m, d = p.shape
        grad = grad.to(p.dtype).contiguous()
        dq = dp = None
        if ctx.needs_input_grad[0]:
            dq = F.embedding_bag(flat, p.reshape(U * m, d), per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[1]:
            rows = (grad[:, :, None] * q[:, None, :]).reshape(-1, d)
            dp = torch.zeros(U * m, d, dtype=p.dtype, device=p.device).index_add_(0, flat.reshape(-1), rows)
            dp = dp.view(U, m, d)
        return dq, dp


def token_contrastive(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, image_slot: torch.Tensor,
                      temperature: float, *, unit_vectors: bool = False) -> torch.Tensor:
    """FILIP's token-wise InfoNCE, text to image: g (B, n, d) tokens of B captions, v (U, m, d) patches of
    the batch's U images, token_mask (B, n) the content tokens, image_slot (B,) each caption's image.

    score(b, u) = mean over b's content tokens i of max_j cos(g_bi, v_uj), divided by the temperature;
    the loss is the cross-entropy of each caption's scores over the batch's images, its own image the
    target. The OT loss alone only asks a word to be close to *some* patches of its image, which a
    background patch satisfies as well as the object; this term asks each word's best patch in its own
    image to beat every other image's best patch, and only the named object differs between images.

    Only content tokens are scored (padding and [CLS]/[SEP] weigh 0 in the mean, so skipping them changes
    nothing but the work), packed into one (K, d) block for `_BestPatch`. Float64 stays float64 (gradient
    checks); anything else runs in float32. unit_vectors: g and v are already `unit`'s output."""
    return F.cross_entropy(maxsim_scores(g, v, token_mask, unit_vectors=unit_vectors) / temperature, image_slot)


def maxsim_scores(g: torch.Tensor, v: torch.Tensor, token_mask: torch.Tensor, *,
                  unit_vectors: bool = False) -> torch.Tensor:
    """(B, U) max-sim score of every caption against every image, without the temperature: the mean over a
    caption's content tokens of each token's best patch cosine (token_contrastive's score; the partial-OT
    score's negative mining reads it too). unit_vectors: g and v are already `unit`'s output."""
    dtype = torch.promote_types(g.dtype, torch.float32)
    caption, token = token_mask.nonzero(as_tuple=True)
    q, vn = g[caption, token], v
    if not unit_vectors:
        q, vn = unit(q), unit(v)
    best = _BestPatch.apply(q, vn)                                      # (K, U)
    weights = 1.0 / token_mask.sum(dim=1).clamp_min(1).to(dtype)
    scores = torch.zeros(g.shape[0], v.shape[0], dtype=dtype, device=g.device)
    return scores.index_add(0, caption, best * weights[caption, None])


# ----------------------------------------------------------------------------- collapse watch

def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine over all pairs i != j of the rows of x (N, d): 1 when every g points the same way
    (the cost matrix then carries nothing), near 0 for spread-out embeddings.

    |sum u|^2 = sum_ij u_i.u_j, so the off-diagonal mean costs O(N d) instead of O(N^2 d)."""
    n = x.shape[0]
    if n < 2:
        return x.new_tensor(float("nan"))
    u = F.normalize(x.detach().float(), dim=-1, eps=1e-8)
    s = u.sum(0)
    return ((s @ s) - (u * u).sum()) / (n * (n - 1))
