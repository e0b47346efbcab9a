"""engine.forward_losses normalises g and v once and packs the OT's content tokens (the training-speed change):
its losses and every parameter's gradient must equal the definition written out term by term, each term
normalising its own inputs, over the unpacked padding, in float64."""
import torch

from pipeline.config import load_defaults
from pipeline.local_score import local_contrastive
from pipeline.losses import matching_bce, ot_alignment_loss, ot_hinge, pick_negatives
from pipeline.modules import StageTwoModules
from pipeline.training.engine import forward_losses


def random_batch(captions=6, images=4, n=9, m=10, d_t=12, d_v=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 5, 7, 3, 9, 6])[:captions]
    positions = torch.arange(n)[None, :]
    content = (positions >= 1) & (positions < lengths[:, None] - 1)
    content[2, 3] = False                       # a token without a span, inside the caption
    return {"h": torch.randn(captions, n, d_t, generator=gen, dtype=torch.float64),
            "patches": torch.randn(images, m, d_v, generator=gen, dtype=torch.float64),
            "prefix": torch.randn(images, 1, d_v, generator=gen, dtype=torch.float64),
            "image_slot": torch.tensor([0, 1, 2, 3, 1, 0])[:captions], "content_mask": content,
            "caption_index": torch.arange(captions)}


def reference_losses(model, batch, cfg, generator):
    """The objective as docs/method.md writes it: every term on the raw g and v, padding left in place."""
    slot, content = batch["image_slot"], batch["content_mask"]
    p0 = model.global_token(batch["prefix"], batch["patches"], class_token=True)
    g, v, t0, vbar = model(batch["h"], batch["patches"], p0)
    pos = model.f_c(t0, vbar[slot])
    valid = slot[:, None] != torch.arange(vbar.shape[0])[None, :]
    idx, mask = pick_negatives(valid, cfg["negatives"], cfg["negative_mode"], None, generator)
    neg = model.f_c(t0[:, None, :].expand(-1, idx.shape[1], -1), vbar[idx])
    out = {"match": matching_bce(pos, neg, mask)}
    rows = content.any(1).nonzero().squeeze(1)
    neg_rows = rows[mask[rows, 0]]
    per_pair, _ = ot_alignment_loss(
        torch.cat([g[rows], g[neg_rows]]), torch.cat([v[slot[rows]], v[idx[neg_rows, 0]]]),
        torch.cat([content[rows], content[neg_rows]]), torch.ones(len(rows) + len(neg_rows), v.shape[1],
                                                                  dtype=torch.bool),
        mass=cfg["mass"], epsilon=cfg["epsilon"], max_iter=cfg["ot_max_iter"], tol=1e-12,
        patch_capacity=cfg["patch_capacity"])
    out["ot"] = per_pair[: len(rows)].mean()
    out["ot_hinge"] = ot_hinge(per_pair[: len(rows)][mask[rows, 0]], per_pair[len(rows):], cfg["ot_hinge_margin"])
    out["local"] = local_contrastive(g[rows], v, content[rows], slot[rows], cfg)
    out["loss"] = (out["match"] + cfg["lambda_ot"] * (out["ot"] + cfg["ot_hinge_weight"] * out["ot_hinge"])
                   + cfg["local_contrastive_weight"] * out["local"])
    return out


def gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def check(local_score):
    cfg = {**load_defaults()["train"], "ot_tol": 1e-12, "ot_max_iter": 5000, "local_score": local_score,
           "local_negatives": 2}
    torch.manual_seed(0)
    model = StageTwoModules(12, 11, 5, 16, True).double()
    batch = random_batch()
    fast = forward_losses(model, batch, cfg, torch.Generator().manual_seed(3), torch.autocast("cpu", enabled=False),
                          with_ot=True, class_token=True)
    fast_grads = gradients(model, fast["loss"])
    slow = reference_losses(model, batch, cfg, torch.Generator().manual_seed(3))
    slow_grads = gradients(model, slow["loss"])
    for term in ("match", "ot", "ot_hinge", "local", "loss"):
        torch.testing.assert_close(fast[term], slow[term], rtol=1e-9, atol=1e-12, msg=term)
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-7, atol=1e-10, msg=name)


def test_normalising_once_and_packing_tokens_changes_no_loss_and_no_gradient():
    check("maxsim")


def test_the_same_with_the_partial_ot_score():
    check("partial_ot")
