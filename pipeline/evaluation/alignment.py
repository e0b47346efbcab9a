"""One pass over a split that measures the local alignment: pointing games, the collapse statistic, the
text-only synonym view, and the data for the figures.

The pointing game runs on three score maps of the same trained model, so a reader can tell the
embeddings from the plan: the plan at the evaluation's own OT settings, the plan at one common setting
shared by every run (so an ablation table compares like with like), and the cosine similarity of g_i
with every patch (no transport at all). The plan at the evaluation's own settings also gets the
baselines, the mass shares and the headline (baselines.py), on the same per-word trials.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.evaluation.baselines import MassShares, baseline_result, headline, word_result
from pipeline.evaluation.bootstrap import RESAMPLES, ClusterBootstrap
from pipeline.evaluation.grounding_file import GroundingFile, as_grounding
from pipeline.evaluation.pointing import PointingGame
from pipeline.evaluation.synonyms import WordTypeAverager, held_out_types, word_occurrences
from pipeline.losses import mean_pairwise_cosine, ot_alignment_loss
from pipeline.modules import MLP
from pipeline.runtime import to_device
from pipeline.training.reader import epoch_loader
from pipeline.transport import ConvergenceTally

PLAN_KEYS = ("mass", "epsilon", "patch_capacity")


def plan_settings(train_cfg: dict, overrides: dict | None = None) -> dict:
    """The OT settings a plan is solved with: the run's own (train.*), each replaced by `overrides[key]`
    where that is not None (evaluate.mass, evaluate.epsilon, evaluate.patch_capacity, or the common
    setting). A missing patch_capacity in an older run's configuration means 1, what it trained with."""
    settings = {"mass": train_cfg["mass"], "epsilon": train_cfg["epsilon"],
                "patch_capacity": train_cfg.get("patch_capacity", 1.0), "solver": train_cfg["ot_solver"],
                "max_iter": train_cfg["ot_max_iter"], "tol": train_cfg["ot_tol"]}
    for key in PLAN_KEYS:
        value = (overrides or {}).get(key)
        if value is not None:
            settings[key] = value
    if not 0 < float(settings["mass"]) <= 1:
        raise ConfigError(f"evaluate.mass must be in (0, 1], got {settings['mass']}")
    if not float(settings["epsilon"]) > 0 or not float(settings["patch_capacity"]) > 0:
        raise ConfigError(f"evaluate.epsilon and evaluate.patch_capacity must be positive, got "
                          f"{settings['epsilon']} and {settings['patch_capacity']}")
    return settings


def solve_plans(g, v, content, settings: dict, tally: ConvergenceTally | None = None) -> torch.Tensor:
    """The plans at `settings`; tally, if given, counts those that stopped before reaching settings["tol"]."""
    _, plan, errors = ot_alignment_loss(g, v, content, torch.ones(v.shape[:2], dtype=torch.bool, device=v.device),
                                mass=settings["mass"], epsilon=settings["epsilon"], solver=settings["solver"],
                                max_iter=settings["max_iter"], tol=settings["tol"],
                                patch_capacity=settings["patch_capacity"], return_errors=True)
    if tally is not None:
        tally.add(errors)
    return plan


@dataclass
class FigureItem:
    caption_id: str
    size: tuple[int, int]     # (w, h) of the original image
    plan: np.ndarray          # (n, m) at the evaluation's own settings
    char_spans: np.ndarray
    content: np.ndarray
    phrases: list = field(default_factory=list)


@dataclass
class AlignmentResult:
    collapse: float
    pointing: dict = field(default_factory=dict)      # name -> PointingGame.result() with "word", settings, ot
    synonyms: dict = field(default_factory=dict)      # space -> precision@1
    baselines: dict = field(default_factory=dict)     # on the plan's per-word trials (baselines.py)
    mass: dict = field(default_factory=dict)          # where the plan's mass goes (baselines.MassShares)
    headline: dict = field(default_factory=dict)      # per-word pointing of the plan and its margin over the object prior
    figures: list = field(default_factory=list)       # FigureItem, the first `figures` grounded captions


@torch.no_grad()
def alignment_pass(model, reader, device, *, grounding: GroundingFile | dict | None, image_size: int, settings: dict,
                   common: dict | None = None, batch_size: int = 64, figures: int = 0, synonyms: bool = False,
                   control_seed: int = 0, bootstrap_seed: int = 0, resamples: int = RESAMPLES) -> AlignmentResult:
    """Score a split's local alignment. `settings` (and `common`, if given) come from `plan_settings`;
    grounding: a GroundingFile or the parsed JSON of either form (None: collapse only). synonyms: average
    the colour and shape word vectors on h, on g and on an untrained MLP shaped like f_g (the control), for
    precision@1. The per-word intervals resample the split's images `resamples` times from bootstrap_seed
    (0: no intervals)."""
    grounding = as_grounding(grounding)
    games = {"plan": PointingGame("plan"), "similarity": PointingGame("similarity")}
    if common is not None:
        games["plan_common"] = PointingGame("plan_common")
    mass = MassShares()
    words = WordTypeAverager() if synonyms else None
    control = None
    if synonyms:
        torch.manual_seed(control_seed)
        d = model.dims
        control = MLP(d["d_t"], d["hidden"], d["d_g"], d["layernorm"]).to(device).eval()
    # Per plan map: how many of its plans stopped at max_iter, reported beside its pointing result.
    tallies = {"plan": ConvergenceTally(settings["tol"])}
    if common is not None:
        tallies["plan_common"] = ConvergenceTally(common["tol"])
    collapse, batches, items = 0.0, 0, []
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
        gk, vk, ck = g[keep], v[slot[keep]], content[keep]
        maps = {"plan": solve_plans(gk, vk, ck, settings, tallies["plan"]).cpu().numpy(),
                "similarity": (F.normalize(gk, dim=-1) @ F.normalize(vk, dim=-1).transpose(1, 2)).cpu().numpy()}
        if common is not None:
            maps["plan_common"] = solve_plans(gk, vk, ck, common, tallies["plan_common"]).cpu().numpy()
        spans, content_np = batch["char_spans"].cpu().numpy(), content.cpu().numpy()
        spaces = {}
        if words is not None:
            spaces = {"h": batch["h"].cpu().numpy(), "g": g.cpu().numpy(), "random_fg": control(batch["h"]).cpu().numpy()}
        for j, i in enumerate(rows):
            image_row = int(batch["image_index"][slot[i]])
            size = tuple(int(x) for x in reader.sizes[image_row])
            phrases, shapes = grounding[ids[i]], grounding.shapes(ids[i])
            for name, scores in maps.items():
                games[name].add_caption(scores[j], spans[i], content_np[i], phrases, size, reader.grid, image_size,
                                        image=image_row, shapes=shapes, caption_id=ids[i])
            mass.add_caption(maps["plan"][j], spans[i], content_np[i], phrases, size, reader.grid, image_size,
                             shapes=shapes, nonvisual=grounding.nonvisual_spans(ids[i]))
            if words is not None:
                found = word_occurrences(spans[i], content_np[i], phrases)
                words.held_out.update(held_out_types(phrases))
                for space, vectors in spaces.items():
                    words.add(space, vectors[i], found)
            if len(items) < figures:
                items.append(FigureItem(ids[i], size, maps["plan"][j], spans[i], content_np[i], grounding[ids[i]]))
    result = AlignmentResult(collapse=collapse / max(batches, 1), figures=items)
    if grounding is not None:
        result.pointing = {name: game.result() for name, game in games.items()}
        for name, game in games.items():
            trials = game.word_trials()
            # One set of image resamples per map, so its rates and margins are paired.
            boot = ClusterBootstrap(trials.image, resamples, bootstrap_seed)
            result.pointing[name]["word"] = word_result(trials, boot)
            if name == "plan":
                result.baselines = dict(baseline_result(trials, boot), map="plan")
                result.headline = headline(trials, boot, "plan")
        result.mass = dict(mass.result(), map="plan")
        for name, tally in tallies.items():
            result.pointing[name]["ot"] = tally.result()
        result.pointing["plan"]["settings"] = _shown(settings)
        if common is not None:
            result.pointing["plan_common"]["settings"] = _shown(common)
    if words is not None:
        result.synonyms = {space: dict(words.precision_at_1(space), held_out=words.precision_at_1(space, held_out=True))
                           for space in ("h", "g", "random_fg")}
    return result


def validation_pointing(grounding: GroundingFile | dict, config: dict):
    """The per-epoch hook of `fit`: pointing on the validation split with the run's own OT settings (plan
    and similarity map, per word, per token and per phrase), logged beside the losses so `dvc plots show`
    draws the curves. No intervals: the curves are watched, not reported."""
    settings, image_size = plan_settings(config["train"]), int(config["extract"]["image_size"])
    grounding = as_grounding(grounding)

    def measure(model, reader, device) -> dict:
        model.eval()
        result = alignment_pass(model, reader, device, grounding=grounding, image_size=image_size,
                                settings=settings, batch_size=config["train"]["batch_size"], resamples=0)
        out = {f"pointing/{score}/{unit}": result.pointing[score][unit]["accuracy"]
               for score in ("plan", "similarity") for unit in ("token", "phrase")}
        out.update({f"pointing/{score}/word": result.pointing[score]["word"]["all"]["accuracy"]
                    for score in ("plan", "similarity")})
        return out
    return measure


def _shown(settings: dict) -> dict:
    return {k: settings[k] for k in PLAN_KEYS}
