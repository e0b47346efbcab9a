"""`groundedbert evaluate grounding`: every metric of a trained run on one split, as one JSON-able dict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.cache_format import read_json
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import matching_accuracy, retrieval, roc_auc
from pipeline.evaluation.pointing import PointingGame
from pipeline.evaluation.scoring import encode_split, matching_pairs, retrieval_ranks
from pipeline.losses import mean_pairwise_cosine, ot_alignment_loss
from pipeline.runtime import pick_device
from pipeline.training import checkpoint as ckpt
from pipeline.training.cache_check import check_against_config, check_same_cache
from pipeline.training.engine import to_device
from pipeline.training.reader import SplitReader, epoch_loader


def load_grounding(path: Path) -> dict:
    """grounding.json (word spans and boxes); a missing or malformed file is the user's to fix."""
    return read_json(path, ConfigError)


@torch.no_grad()
def plans_and_collapse(model, reader: SplitReader, cfg: dict, batch_size: int, device, grounding: dict | None,
                       image_size: int):
    """Mean within-batch collapse statistic over the split, and the pointing game when `grounding`
    is given (transport plans solved with the run's own OT settings; image_size is the encoder's input
    side, which places the boxes on the patch grid)."""
    game, collapse, batches = PointingGame(), 0.0, 0
    for batch in epoch_loader(reader, batch_size, seed=None):
        batch = to_device(batch, device)
        content, slot = batch["content_mask"], batch["image_slot"]
        p0 = model.global_token(batch["prefix"], batch["patches"], class_token=reader.class_token)
        g, v, _, _ = model(batch["h"], batch["patches"], p0)
        c = mean_pairwise_cosine(g[content])
        if torch.isfinite(c):
            collapse, batches = collapse + float(c), batches + 1
        if grounding is None:
            continue
        ids = [reader.caption_ids[i] for i in batch["caption_index"].tolist()]
        rows = [i for i, cid in enumerate(ids) if grounding.get(cid) and bool(content[i].any())]
        if not rows:
            continue
        keep = torch.tensor(rows, device=device)
        _, plan = ot_alignment_loss(g[keep], v[slot[keep]], content[keep],
                                    torch.ones(v.shape[:2], dtype=torch.bool, device=device)[slot[keep]],
                                    mass=cfg["mass"], epsilon=cfg["epsilon"], solver=cfg["ot_solver"],
                                    max_iter=cfg["ot_max_iter"], tol=cfg["ot_tol"])
        plan, spans, content_np = plan.cpu().numpy(), batch["char_spans"].cpu().numpy(), content.cpu().numpy()
        for j, i in enumerate(rows):
            image_row = int(batch["image_index"][slot[i]])
            game.add_caption(plan[j], spans[i], content_np[i], grounding[ids[i]], reader.sizes[image_row], reader.grid,
                             image_size)
    return collapse / max(batches, 1), (game.result() if grounding is not None else None)


def evaluate_run(run_dir: Path, split_dir: Path, eval_cfg: dict, grounding_file: Path | None = None) -> dict:
    checkpoint = ckpt.load(ckpt.checkpoint_dir(run_dir) / ckpt.BEST)
    config = checkpoint["config"]
    cfg = config["train"]
    device = pick_device(cfg["device"])
    model = ckpt.build_model(checkpoint).to(device).eval()
    reader = SplitReader(split_dir, cfg["memory_budget_gb"])
    check_against_config(reader, config["extract"])
    check_same_cache(reader, checkpoint["cache"], f"the cache the run {run_dir} was trained on")

    t0, vbar, gold = encode_split(model, reader, eval_cfg["block_size"], device)
    t2i, i2t = retrieval_ranks(model, t0, vbar, gold, eval_cfg["block_size"])
    logits, labels = matching_pairs(model, t0, vbar, gold, eval_cfg["seed"])
    grounding = load_grounding(grounding_file) if grounding_file is not None else None
    # extract.image_size is the side the cache's images were resized and cropped to: check_against_config
    # above has matched it against the cache's fingerprint.
    collapse, pointing = plans_and_collapse(model, reader, cfg, cfg["batch_size"], device, grounding,
                                            int(config["extract"]["image_size"]))

    metrics = {"split": Path(split_dir).name, "captions": reader.num_captions, "images": reader.num_images,
               "matching": {"accuracy": matching_accuracy(logits, labels), "pairs": int(len(labels)),
                            "roc_auc": roc_auc(logits, labels) if 0 < labels.sum() < len(labels) else float("nan")},
               "retrieval": retrieval(t2i, i2t, gold, reader.num_images),
               "collapse": {"mean_pairwise_cosine_g": collapse}}
    if pointing is not None:
        metrics["pointing"] = pointing
    return _finite_or_none(metrics)


def _finite_or_none(obj):
    """JSON has no NaN: undefined metrics (no negatives, no grounded words) are written as null."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
