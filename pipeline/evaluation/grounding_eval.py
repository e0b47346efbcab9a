"""`groundedbert evaluate grounding`: every metric of a trained run on one split, as one JSON-able dict,
and the alignment figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.cache.staleness import check_against_config, check_same_cache
from pipeline.data.images import load_rgb
from pipeline.data.loaders import load_split, resolve_image
from pipeline.encoders.preprocess import Preprocess
from pipeline.errors import ConfigError
from pipeline.evaluation.alignment import FigureItem, alignment_pass, plan_settings
from pipeline.evaluation.figures import draw_alignment
from pipeline.evaluation.grounding_file import load_grounding
from pipeline.evaluation.metrics import check_finite_scores, matching_accuracy, retrieval, roc_auc
from pipeline.evaluation.pointing import box_in_crop, word_trials
from pipeline.evaluation.scoring import encode_split, matching_pairs, retrieval_ranks
from pipeline.runtime import pick_device
from pipeline.training import checkpoint as ckpt
from pipeline.training.reader import SplitReader


__all__ = ["evaluate_run", "load_grounding", "write_figures"]   # load_grounding: `train --grounding` reads it here


def evaluate_run(run_dir: Path, split_dir: Path, eval_cfg: dict, grounding_file: Path | None = None, *,
                 figures: int = 0, figures_dir: Path | None = None, captions_file: Path | None = None,
                 images_root: Path | None = None) -> dict:
    """Metrics of the run's best checkpoint on one cached split. With `figures` > 0 (and the captions file
    and images folder the cache was extracted from), also one alignment PNG per caption in figures_dir."""
    if figures and (grounding_file is None or captions_file is None or images_root is None):
        raise ConfigError("--figures needs --grounding, --captions and --images (the files the cache was made from)")
    best = ckpt.checkpoint_dir(run_dir) / ckpt.BEST
    checkpoint = ckpt.load(best)
    config = checkpoint["config"]
    cfg = config["train"]
    settings = plan_settings(cfg, eval_cfg)
    common = plan_settings(cfg, eval_cfg["common"])
    device = pick_device(cfg["device"])
    model = ckpt.build_model(checkpoint).to(device).eval()
    reader = SplitReader(split_dir, cfg["memory_budget_gb"])
    check_against_config(reader, config["extract"])
    check_same_cache(reader, checkpoint["cache"], f"the cache the run {run_dir} was trained on")

    t0, vbar, gold = encode_split(model, reader, eval_cfg["block_size"], device)
    t2i, i2t = retrieval_ranks(model, t0, vbar, gold, eval_cfg["block_size"], source=str(best))
    logits, labels = matching_pairs(model, t0, vbar, gold, eval_cfg["seed"])
    # The same fault in the matching pairs: NaN > 0 is False, so a NaN logit would pass for a negative.
    check_finite_scores(logits, "the matching pairs' logits (own image, then one other)", str(best))
    grounding = load_grounding(grounding_file) if grounding_file is not None else None
    # extract.image_size is the side the cache's images were resized and cropped to: check_against_config
    # above has matched it against the cache's fingerprint.
    image_size = int(config["extract"]["image_size"])
    alignment = alignment_pass(model, reader, device, grounding=grounding, image_size=image_size, settings=settings,
                               common=common, batch_size=cfg["batch_size"], figures=figures,
                               synonyms=grounding is not None, control_seed=eval_cfg["seed"],
                               bootstrap_seed=eval_cfg["seed"])

    metrics = {"split": Path(split_dir).name, "captions": reader.num_captions, "images": reader.num_images,
               "matching": {"accuracy": matching_accuracy(logits, labels), "pairs": int(len(labels)),
                            "roc_auc": roc_auc(logits, labels) if 0 < labels.sum() < len(labels) else float("nan")},
               "retrieval": retrieval(t2i, i2t, gold, reader.num_images),
               "collapse": {"mean_pairwise_cosine_g": alignment.collapse}}
    if grounding is not None:
        metrics["headline"] = alignment.headline
        metrics["pointing"] = alignment.pointing
        metrics["baselines"] = alignment.baselines
        metrics["mass"] = alignment.mass
        metrics["synonyms"] = alignment.synonyms
        metrics["grounding_format"] = grounding.format
    if alignment.figures:
        write_figures(alignment.figures, Path(figures_dir), captions_file, images_root, reader, image_size)
    return _finite_or_none(metrics)


def write_figures(items: list[FigureItem], out_dir: Path, captions_file: Path, images_root: Path, reader,
                  image_size: int) -> list[Path]:
    """One PNG per caption: the image as the encoder saw it with each phrase's box, and each grounded word's
    transport mass over the patch grid. Older figures in out_dir are removed first, so the folder (a DVC
    plots output) never mixes two runs."""
    records = {r.caption_id: r for r in load_split(captions_file, images_root)}
    interpolation = reader.fingerprint.get("image", {}).get("encoder", {}).get("preprocessing", {}).get(
        "interpolation", "bicubic")
    crop = Preprocess(image_size, interpolation, (0.0,) * 3, (1.0,) * 3).crop
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    gh, gw = reader.grid
    written = []
    for item in items:
        record = records.get(item.caption_id)
        if record is None:
            raise ConfigError(f"file {captions_file}: caption {item.caption_id} of the cache is not in it "
                              f"(pass the captions file the cache was extracted from)")
        image = np.asarray(crop(load_rgb(resolve_image(images_root, record), item.caption_id)))
        phrases, words = [], []
        for phrase in item.phrases:
            box = box_in_crop(phrase["box"], item.size, image_size)
            phrases.append((phrase.get("text", record.text[phrase["start"]:phrase["end"]]), box))
            for _, start, end, tokens in word_trials(phrase, item.char_spans, item.content):
                if len(tokens):
                    words.append((record.text[start:end], item.plan[tokens].sum(axis=0).reshape(gh, gw), box))
        written.append(draw_alignment(out_dir / f"{item.caption_id}.png", image, record.text, phrases, words))
    return written


def _finite_or_none(obj):
    """JSON has no NaN: undefined metrics (no negatives, no grounded words) are written as null."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
