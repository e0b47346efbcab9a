"""The losses on hand-computed cases (the OT loss's gradient: tests/test_transport_interface.py)."""
import math

import numpy as np
import ot
import pytest
import torch

from pipeline.losses import (cosine_cost, matching_bce, mean_pairwise_cosine, ot_alignment_loss, ot_hinge,
                             pick_negatives)


def softplus(x):
    return math.log1p(math.exp(x))


# ----------------------------------------------------------------------------- matching

def test_bce_hand_computed():
    pos = torch.tensor([0.0, 2.0])
    neg = torch.tensor([[1.0], [-1.0]])
    # -log sigmoid(x) = softplus(-x) for label 1, softplus(x) for label 0.
    want = (softplus(0.0) + softplus(-2.0) + softplus(1.0) + softplus(-1.0)) / 4
    assert matching_bce(pos, neg, torch.ones(2, 1, dtype=torch.bool)).item() == pytest.approx(want, rel=1e-6)


def test_bce_ignores_masked_negatives():
    pos = torch.tensor([0.5, -0.5])
    neg = torch.tensor([[3.0, 100.0], [-2.0, 100.0]])
    mask = torch.tensor([[True, False], [True, False]])
    want = (softplus(-0.5) + softplus(0.5) + softplus(3.0) + softplus(-2.0)) / 4
    assert matching_bce(pos, neg, mask).item() == pytest.approx(want, rel=1e-6)


def test_random_negatives_never_the_own_image_and_without_replacement():
    slot = torch.tensor([0, 0, 1, 2, 3])
    valid = slot[:, None] != torch.arange(4)[None, :]
    idx, mask = pick_negatives(valid, 3, "random", generator=torch.Generator().manual_seed(0))
    assert mask.all()
    assert not (idx == slot[:, None]).any()
    assert all(len(set(row.tolist())) == 3 for row in idx)


def test_hard_negatives_are_the_highest_scoring_wrong_images():
    slot = torch.tensor([0, 1])
    valid = slot[:, None] != torch.arange(3)[None, :]
    scores = torch.tensor([[9.0, 1.0, 5.0], [7.0, 9.0, 2.0]])   # own image scores highest: must be skipped
    idx, mask = pick_negatives(valid, 1, "hard", scores)
    assert idx.tolist() == [[2], [0]] and mask.all()


def test_fewer_valid_negatives_than_k_are_masked():
    slot = torch.tensor([0, 0, 1])
    valid = slot[:, None] != torch.arange(2)[None, :]
    idx, mask = pick_negatives(valid, 3, "random", generator=torch.Generator().manual_seed(0))
    assert idx.shape == (3, 2)
    assert mask.sum(1).tolist() == [1, 1, 1]
    one_image = torch.zeros(2, 1, dtype=torch.bool)              # a batch of one image has no negative
    assert not pick_negatives(one_image, 1, "random")[1].any()


# ----------------------------------------------------------------------------- alignment

def test_cosine_cost_hand_computed():
    g = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    v = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])
    s = 1 / math.sqrt(2)
    want = torch.tensor([[[0.0, 1 - s, 2.0], [1.0, 1 - s, 1.0]]])
    assert torch.allclose(cosine_cost(g, v), want, atol=1e-6)


def _pair():
    """g = (e1, e2), v = (e1, -e1): C = [[0, 2], [1, 1]]."""
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    v = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    return g, v, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)


@pytest.mark.parametrize("mass, want", [
    (1.0, 0.5),          # full OT: the diagonal (0 + 1) / 2 beats the anti-diagonal (2 + 1) / 2
    (0.75, 1 / 3),       # 0.5 on C11 = 0, the remaining 0.25 must use row 2 and column 2: C22 = 1
    (0.5, 0.0),          # all the mass fits on C11 = 0
])
def test_partial_ot_loss_hand_computed(mass, want):
    g, v, rows, cols = _pair()
    loss, plan = ot_alignment_loss(g, v, rows, cols, mass=mass, epsilon=0.05, solver="pot-exact")
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert plan.sum().item() == pytest.approx(mass, abs=1e-6)
    # The same value straight from POT, on the same cost.
    C = np.array([[0.0, 2.0], [1.0, 1.0]])
    T = ot.partial.partial_wasserstein(np.full(2, 0.5), np.full(2, 0.5), C, m=mass)
    assert (T * C).sum() / mass == pytest.approx(want, abs=1e-9)


def test_special_and_padding_tokens_carry_no_mass():
    g, v, rows, cols = _pair()
    # The same caption padded with a [CLS]-like first token and two padding rows that would be cheap.
    g_pad = torch.cat([v[:, :1], g, v[:, :1], v[:, :1]], dim=1)
    rows_pad = torch.tensor([[False, True, True, False, False]])
    loss, plan = ot_alignment_loss(g_pad, v, rows_pad, cols, mass=0.75, epsilon=0.05, solver="pot-exact")
    assert loss.item() == pytest.approx(1 / 3, abs=1e-6)
    assert plan[0, ~rows_pad[0]].abs().sum().item() == 0.0


def test_ot_hinge_hand_computed():
    matched, mismatched = torch.tensor([0.3, 0.5, 0.1]), torch.tensor([0.9, 0.6, 0.0])
    # margin 0.2: max(0, 0.2 + 0.3 - 0.9) = 0, max(0, 0.2 + 0.5 - 0.6) = 0.1, max(0, 0.2 + 0.1 - 0.0) = 0.3
    assert ot_hinge(matched, mismatched, 0.2).item() == pytest.approx(0.4 / 3)


def test_cost_stays_float32_under_bfloat16_inputs():
    g = torch.randn(1, 3, 4).bfloat16()
    v = torch.randn(1, 5, 4).bfloat16()
    assert cosine_cost(g, v).dtype == torch.float32


# ----------------------------------------------------------------------------- collapse

def test_collapse_statistic():
    same = torch.tensor([[1.0, 2.0]]).repeat(5, 1)
    assert mean_pairwise_cosine(same).item() == pytest.approx(1.0, abs=1e-6)
    assert mean_pairwise_cosine(torch.eye(4)).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(1))
    u = torch.nn.functional.normalize(x, dim=1)
    cos = u @ u.T
    brute = (cos.sum() - cos.diagonal().sum()) / (9 * 8)
    assert mean_pairwise_cosine(x).item() == pytest.approx(brute.item(), abs=1e-6)


# ----------------------------------------------------------------------------- token-wise contrast

def _token_contrastive_dense(g, v, token_mask, image_slot, temperature):
    """The definition, written the direct way: every (caption, image, token, patch) cosine, then amax."""
    gn = torch.nn.functional.normalize(g, dim=-1, eps=1e-8)
    vn = torch.nn.functional.normalize(v, dim=-1, eps=1e-8)
    best = torch.einsum("bnd,umd->bunm", gn, vn).amax(dim=-1)
    weights = token_mask.to(g.dtype) / token_mask.to(g.dtype).sum(dim=1, keepdim=True).clamp_min(1.0)
    scores = (best * weights[:, None, :]).sum(dim=-1) / temperature
    return torch.nn.functional.cross_entropy(scores, image_slot)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_contrastive_equals_the_dense_definition_with_its_gradients(seed):
    from pipeline.losses import token_contrastive
    gen = torch.Generator().manual_seed(seed)
    B, n, U, m, d = 7, 9, 5, 11, 6
    g = torch.randn(B, n, d, dtype=torch.float64, generator=gen)
    v = torch.randn(U, m, d, dtype=torch.float64, generator=gen)
    mask = torch.rand(B, n, generator=gen) < 0.6
    mask[0] = False                                   # a caption without content tokens scores 0 everywhere
    slot = torch.randint(0, U, (B,), generator=gen)
    got_g, got_v = g.clone().requires_grad_(), v.clone().requires_grad_()
    want_g, want_v = g.clone().requires_grad_(), v.clone().requires_grad_()
    got = token_contrastive(got_g, got_v, mask, slot, 0.07)
    want = _token_contrastive_dense(want_g, want_v, mask, slot, 0.07)
    got.backward()
    want.backward()
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(got_g.grad, want_g.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(got_v.grad, want_v.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: token_contrastive(a, b, mask, slot, 0.5),
                                    (g.clone().requires_grad_(), v.clone().requires_grad_()))


def test_token_contrastive_float32_matches_the_definition():
    from pipeline.losses import token_contrastive
    gen = torch.Generator().manual_seed(3)
    g, v = torch.randn(16, 12, 32, generator=gen), torch.randn(10, 49, 32, generator=gen)
    mask, slot = torch.rand(16, 12, generator=gen) < 0.7, torch.randint(0, 10, (16,), generator=gen)
    assert torch.allclose(token_contrastive(g, v, mask, slot, 0.07), _token_contrastive_dense(g, v, mask, slot, 0.07),
                          rtol=1e-5, atol=1e-5)
