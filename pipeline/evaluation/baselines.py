"""What per-word pointing is worth: baselines on the same trials, where the plan's mass goes, and the
headline numbers with their intervals.

A synthetic image holds a few shapes on a plain background, so "point at some object" already scores
far above uniform chance. The baselines say how far, scored by the pointing game's own hit rule on the
very trials the model is scored on (pointing.WordTrials):
- uniform: a patch drawn at random (the share of patch centres in the box);
- object prior: the patch holding the centre of one of the image's shapes drawn uniformly, its expected
  hit rate computed exactly (the mean over the shapes);
- largest shape: the patch holding the centre of the shape with the largest visible area;
- any word: the model's own map summed over all the caption's content tokens, the same for every word,
  so it knows where the caption's objects are but not which word names which.
The first three need every shape of the image, which only format 2 of grounding.json lists; with the
flat form they are null with a reason.
"""
from __future__ import annotations

import numpy as np

from pipeline.evaluation.bootstrap import ClusterBootstrap
from pipeline.evaluation.pointing import (WORD_KINDS, WordTrials, box_in_crop, grounded_tokens,
                                          patches_in_box)

NEEDS_SHAPES = ("the flat grounding.json lists only the shapes its captions name, not every shape of the "
                "image; format 2 is needed")
MULTI_RULE = {True: "images with two shapes or more (format 2's image shapes)",
              False: "images whose captions name two distinct boxes or more (the flat form lists no other shapes)"}


def _rate(boot: ClusterBootstrap, values: np.ndarray, mask: np.ndarray, chance: np.ndarray | None = None) -> dict:
    """{accuracy, trials, images, ci95} of the mean of `values` over the masked trials."""
    n = int(mask.sum())
    out = {"accuracy": float(values[mask].mean()) if n else float("nan"), "trials": n,
           "images": int(len(np.unique(boot.cluster[mask]))) if n else 0,
           "ci95": boot.interval(values, mask) if n else None}
    if chance is not None:
        out["chance"] = float(chance[mask].mean()) if n else float("nan")
    return out


def subsets(trials: WordTrials) -> dict[str, np.ndarray]:
    return {"all": np.ones(len(trials.hit), dtype=bool), "multi_shape": trials.multi}


def word_result(trials: WordTrials, boot: ClusterBootstrap) -> dict:
    """Per-word pointing: all trials and multi-shape images with intervals, and by kind."""
    out = {name: _rate(boot, trials.hit, mask, trials.chance) for name, mask in subsets(trials).items()}
    for kind in WORD_KINDS:
        mask = trials.kind == kind
        n = int(mask.sum())
        out[kind] = {"accuracy": float(trials.hit[mask].mean()) if n else float("nan"),
                     "chance": float(trials.chance[mask].mean()) if n else float("nan"), "trials": n}
    out["multi_shape_rule"] = MULTI_RULE[trials.shapes_known]
    return out


def baseline_result(trials: WordTrials, boot: ClusterBootstrap) -> dict:
    """Every baseline on the per-word trials of one map, all and multi-shape."""
    masks = subsets(trials)
    out = {"uniform": {k: _rate(boot, trials.chance, m) for k, m in masks.items()},
           "any_word": {k: _rate(boot, trials.any_word, m & np.isfinite(trials.any_word)) for k, m in masks.items()}}
    for name, values in (("object_prior", trials.object_prior), ("largest_shape", trials.largest_shape)):
        if trials.shapes_known:
            out[name] = {k: _rate(boot, values, m) for k, m in masks.items()}
        else:
            out[name] = {"all": None, "multi_shape": None, "reason": NEEDS_SHAPES}
    return out


def headline(trials: WordTrials, boot: ClusterBootstrap, map_name: str) -> dict:
    """Per-word pointing, the object prior and the model's margin over it (paired: the same trials and
    the same image resamples), for all images and multi-shape images."""
    masks = subsets(trials)
    out = {"map": map_name, "trials": int(len(trials.hit)), "images": boot.images, "resamples": boot.resamples,
           "multi_shape_rule": MULTI_RULE[trials.shapes_known]}
    for suffix, key in (("all", "all"), ("multi", "multi_shape")):
        mask = masks[key]
        model = _rate(boot, trials.hit, mask)
        out[f"pointing_word_{suffix}"], out[f"pointing_word_{suffix}_ci95"] = model["accuracy"], model["ci95"]
        out[f"trials_{suffix}"] = model["trials"]
        if trials.shapes_known:
            prior = _rate(boot, trials.object_prior, mask)
            margin = _rate(boot, trials.hit - trials.object_prior, mask)
            out[f"object_prior_{suffix}"], out[f"object_prior_{suffix}_ci95"] = prior["accuracy"], prior["ci95"]
            out[f"margin_over_object_prior_{suffix}"] = margin["accuracy"]
            out[f"margin_over_object_prior_{suffix}_ci95"] = margin["ci95"]
        else:
            for name in ("object_prior", "margin_over_object_prior"):
                out[f"{name}_{suffix}"] = out[f"{name}_{suffix}_ci95"] = None
    if not trials.shapes_known:
        out["reason"] = NEEDS_SHAPES
    return out


class MassShares:
    """Where a plan's mass goes: on patches whose centre lies in a named shape's box, in an unnamed shape's
    box (and no named one), or on background; and how much mass the non-visual words ("in this picture")
    carry against their share of the content tokens, and where theirs goes. Pooled over captions (mass
    over mass), beside the share of patches in each region (what a uniform spread would give)."""

    def __init__(self):
        self.mass = {"named": 0.0, "unnamed": 0.0, "background": 0.0}
        self.patches = {"named": 0.0, "unnamed": 0.0, "background": 0.0}
        self.nonvisual = {"mass": 0.0, "total": 0.0, "tokens": 0, "content_tokens": 0, "on_shapes": 0.0}
        self.captions, self.with_shapes = 0, 0

    def add_caption(self, plan: np.ndarray, char_spans: np.ndarray, content: np.ndarray, phrases: list[dict],
                    size, grid: tuple[int, int], image_size: int, *, shapes: list[dict] | None = None,
                    nonvisual: list[dict] | None = None) -> None:
        content = np.asarray(content, dtype=bool)
        rows = np.asarray(plan, dtype=np.float64)
        per_patch = rows[content].sum(axis=0)
        total = float(per_patch.sum())
        m = per_patch.shape[0]
        named = np.zeros(m, dtype=bool)
        for phrase in phrases:
            named |= patches_in_box(grid, box_in_crop(phrase["box"], size, image_size))
        self.captions += 1
        if shapes is None:   # the flat form: only the named region is known
            self.mass["named"] += float(per_patch[named].sum())
            self.nonvisual["total"] += total
            self.patches["named"] += float(named.mean())
            return
        self.with_shapes += 1
        shape = named.copy()
        for s in shapes:
            shape |= patches_in_box(grid, box_in_crop(s["box"], size, image_size))
        regions = {"named": named, "unnamed": shape & ~named, "background": ~shape}
        for key, region in regions.items():
            self.mass[key] += float(per_patch[region].sum())
            self.patches[key] += float(region.mean())
        self.nonvisual["total"] += total
        self.nonvisual["content_tokens"] += int(content.sum())
        tokens = set()
        for span in nonvisual or ():
            tokens.update(grounded_tokens(char_spans, content, int(span["start"]), int(span["end"])).tolist())
        if tokens:
            nv = rows[sorted(tokens)].sum(axis=0)
            self.nonvisual["tokens"] += len(tokens)
            self.nonvisual["mass"] += float(nv.sum())
            self.nonvisual["on_shapes"] += float(nv[shape].sum())

    def result(self) -> dict:
        total, nv = self.nonvisual["total"], self.nonvisual
        share = (lambda x, d: x / d if d > 0 else float("nan"))
        if self.captions and self.with_shapes == self.captions:
            out = {k: share(v, total) for k, v in self.mass.items()}
            out["patches"] = {k: share(v, self.captions) for k, v in self.patches.items()}
            out["nonvisual"] = {"mass_share": share(nv["mass"], total),
                                "token_share": share(nv["tokens"], nv["content_tokens"]),
                                "off_background": share(nv["on_shapes"], nv["mass"]), "tokens": nv["tokens"]}
        else:
            out = {"named": share(self.mass["named"], total), "unnamed": None, "background": None,
                   "patches": {"named": share(self.patches["named"], self.captions), "unnamed": None,
                               "background": None},
                   "nonvisual": None, "reason": NEEDS_SHAPES}
        out["captions"] = self.captions
        return out
