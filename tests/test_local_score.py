"""The local term's scores (pipeline/local_score.py): the partial-OT score's gradient with the plan held fixed, its
value, its negatives, a few training steps through the engine, and the choice of score through the schema."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import load_defaults, resolve
from pipeline.errors import ConfigError
from pipeline.losses import maxsim_scores
from pipeline.local_score import (hardest_negatives, local_contrastive, partial_ot_contrastive,
                                  partial_ot_scores, transport_score)
from pipeline.losses import token_contrastive
from pipeline.modules import StageTwoModules
from pipeline.training.engine import forward_losses
from pipeline.training.reader import SplitReader
from pipeline.transport import ConvergenceTally, solve_plan
from stage2_fixtures import make_split

OT = dict(mass=0.5, epsilon=0.05, patch_capacity=4.0, max_iter=1000, tol=1e-6)


def batch(B=5, U=4, n=6, m=9, d=7, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(B, n, d, generator=gen, dtype=dtype)
    v = torch.randn(U, m, d, generator=gen, dtype=dtype)
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[:, 0] = False                     # [CLS]
    mask[1, 3:] = False                    # a shorter caption: [SEP] and padding
    mask[3, 1] = False                     # a token without a character span
    slot = torch.tensor([0, 1, 2, 3, 1])[:B] % U
    return g, v, mask, slot


def solved(g, v, mask, mass=0.5, capacity=4.0):
    """Each pair's plan, solved on its own (no packing, no batching): (P, n, m)."""
    cost = 1 - F.normalize(g.float(), dim=-1) @ F.normalize(v.float(), dim=-1).transpose(1, 2)
    return solve_plan(cost, mask, torch.ones(v.shape[:2], dtype=torch.bool), mass=mass, epsilon=0.05,
                      patch_capacity=capacity, max_iter=1000, tol=1e-6)


def test_the_gradient_with_the_plan_held_fixed_matches_finite_differences():
    g, v, mask, _ = batch(dtype=torch.float64)
    pairs_g, pairs_v, pairs_mask = g[:4], v, mask[:4]
    plan = solved(pairs_g, pairs_v, pairs_mask).double()
    g_, v_ = pairs_g.clone().requires_grad_(), pairs_v.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: transport_score(a, b, plan), (g_, v_), eps=1e-6, atol=1e-8)


def test_the_loss_backpropagates_through_the_scores_with_its_plans_constant():
    """The loss's gradient is that of the cross-entropy of Σ T cos / Σ T with the very plans it solved: nothing
    flows through the solver."""
    g, v, mask, slot = batch(dtype=torch.float64)
    g1, v1 = g.clone().requires_grad_(), v.clone().requires_grad_()
    partial_ot_contrastive(g1, v1, mask, slot, 0.07, negatives=None, **OT).backward()
    B, U = g.shape[0], v.shape[0]
    pg, pv = g[:, None].expand(B, U, *g.shape[1:]), v[None].expand(B, U, *v.shape[1:])
    plan = solved(pg.reshape(B * U, *g.shape[1:]), pv.reshape(B * U, *v.shape[1:]),
                  mask[:, None].expand(B, U, -1).reshape(B * U, -1)).double()
    g2, v2 = g.clone().requires_grad_(), v.clone().requires_grad_()
    scores = transport_score(g2[:, None].expand(B, U, *g.shape[1:]).reshape(B * U, *g.shape[1:]),
                             v2[None].expand(B, U, *v.shape[1:]).reshape(B * U, *v.shape[1:]), plan)
    F.cross_entropy(scores.view(B, U) / 0.07, slot).backward()
    torch.testing.assert_close(g1.grad, g2.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("capacity", [1.0, 4.0])
def test_with_full_mass_the_score_is_the_plan_weighted_cosine(capacity):
    g, v, mask, slot = batch()
    B, U = g.shape[0], v.shape[0]
    scores, valid, target = partial_ot_scores(g, v, mask, slot, negatives=None, **{**OT, "mass": 1.0,
                                                                                   "patch_capacity": capacity})
    assert valid.all() and torch.equal(target, slot) and scores.shape == (B, U)
    for b in range(B):
        plan = solved(g[b].expand(U, -1, -1), v, mask[b].expand(U, -1), mass=1.0, capacity=capacity)
        cos = F.normalize(g[b], dim=-1) @ F.normalize(v, dim=-1).transpose(1, 2)          # (U, n, m)
        torch.testing.assert_close(plan.sum(dim=(1, 2)), torch.ones(U), rtol=0, atol=1e-5)   # s = 1: all the mass
        want = (plan * cos).sum(dim=(1, 2)) / plan.sum(dim=(1, 2))
        torch.testing.assert_close(scores[b], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(transport_score(g[b].expand(U, -1, -1), v, plan), want)


def test_hardest_negatives_are_the_highest_max_sim_other_images():
    g, v, mask, slot = batch(B=5, U=4)
    idx, valid = hardest_negatives(g, v, mask, slot, 2)
    assert torch.equal(idx[:, 0], slot) and valid.all()
    ms = maxsim_scores(g, v, mask)
    for b in range(5):
        others = [u for u in range(4) if u != slot[b]]
        assert idx[b, 1:].tolist() == sorted(others, key=lambda u: -ms[b, u].item())[:2]
    # Fewer other images than asked: the extra candidates are masked out of the softmax.
    idx, valid = hardest_negatives(g[:2], v[:2], mask[:2], torch.tensor([0, 1]), 3)
    assert valid.sum(1).tolist() == [2, 2]


def test_maxsim_is_the_filip_term_and_an_unknown_score_is_refused():
    g, v, mask, slot = batch()
    cfg = load_defaults()["train"]
    assert cfg["local_score"] == "maxsim"
    assert torch.equal(local_contrastive(g, v, mask, slot, cfg),
                       token_contrastive(g, v, mask, slot, cfg["local_contrastive_temperature"]))
    with pytest.raises(ConfigError, match="train.local_score must be one of maxsim, partial_ot, got 'filip'"):
        local_contrastive(g, v, mask, slot, {**cfg, "local_score": "filip"})


@pytest.mark.parametrize("override, reason", [
    ("train.local_score=filip", "should be 'maxsim' or 'partial_ot', got 'filip'"),
    ("train.local_negatives=0", "should be greater than or equal to 1, got 0"),
])
def test_the_schema_refuses_an_unknown_score(override, reason):
    with pytest.raises(ConfigError) as caught:
        resolve(None, [override])
    assert str(caught.value) == f"configuration key {override.split('=')[0]!r}: {reason} (from --set {override})"
    config = resolve(None, ["train.local_score=partial_ot", "train.local_negatives=null"])
    assert config["train"]["local_negatives"] is None


@pytest.mark.parametrize("negatives", [2, None])
def test_the_partial_ot_term_trains_in_a_few_engine_steps(tmp_path, negatives):
    make_split(tmp_path / "train", n_images=8, captions_per_image=2)
    reader = SplitReader(tmp_path / "train")
    data = reader.make_batch(reader.plan(16, None)[0])
    torch.manual_seed(0)
    cfg = {**load_defaults()["train"], "local_score": "partial_ot", "local_negatives": negatives,
           "lambda_ot": 0.0, "patch_capacity": 4.0}
    d_t, d_v = reader.dims()
    model = StageTwoModules(d_t, d_v, 8, 16, True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data = {k: (t.float() if k in ("h", "patches", "prefix") else t) for k, t in data.items()}
    local, tally = [], ConvergenceTally(cfg["ot_tol"])
    for _ in range(6):
        out = forward_losses(model, data, cfg, torch.Generator().manual_seed(0),
                             torch.autocast("cpu", enabled=False), with_ot=False, class_token=reader.class_token,
                             ot_tally=tally)
        optimizer.zero_grad()
        out["local"].backward()
        optimizer.step()
        local.append(out["local"].item())
    assert all(torch.isfinite(torch.tensor(local)))
    assert local[-1] < local[0] - 0.05
    per_caption = 1 + (negatives if negatives is not None else 7)
    assert tally.plans == 6 * 16 * per_caption       # the local plans count toward ot_unconverged


def test_solving_a_few_captions_at_a_time_gives_the_same_scores(monkeypatch):
    import pipeline.local_score as local_score

    g, v, mask, slot = batch()
    whole = partial_ot_scores(g, v, mask, slot, negatives=2, **OT)[0]
    monkeypatch.setattr(local_score, "SOLVE_CHUNK_BYTES", 1)    # one caption per solve
    chunked = partial_ot_scores(g, v, mask, slot, negatives=2, **OT)[0]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_max_sim_bounds_the_full_mass_score_from_above():
    """Why the hardest negatives by max-sim are the right ones to keep (pipeline/local_score.py)."""
    g, v, mask, slot = batch()
    scores = partial_ot_scores(g, v, mask, slot, negatives=None, **{**OT, "mass": 1.0})[0]
    assert (scores <= maxsim_scores(g, v, mask) + 1e-5).all()
