"""Baselines on hand-computed scenes: the object priors' expected hit rates, the any-word map, the
headline margin, and where a plan's mass goes."""
import numpy as np
import pytest

from pipeline.evaluation.baselines import (NEEDS_SHAPES, MassShares, baseline_result, headline, word_result)
from pipeline.evaluation.bootstrap import ClusterBootstrap
from pipeline.evaluation.pointing import PointingGame, shape_priors

# A 64x64 image seen whole on a 4x4 grid: patch centres at 8, 24, 40, 56 px.
A = {"box": [0, 0, 32, 32], "centre": [16, 16], "area": 1024.0}      # patches 0, 1, 4, 5; centre in patch 5
B = {"box": [32, 0, 64, 32], "centre": [48, 16], "area": 1024.0}     # centre in patch 7
C = {"box": [0, 32, 64, 64], "centre": [32, 48], "area": 2048.0}     # patches 8-15; centre in patch 14
SHAPES = [A, B, C]
GRID, SIZE, S = (4, 4), (64, 64), 64

# "red square and blue band": [CLS] red square and blue band [SEP]
CAPTION = "red square and blue band"
SPANS = np.array([[0, 0], [0, 3], [4, 10], [11, 14], [15, 19], [20, 24], [0, 0]])
CONTENT = np.array([False, True, True, True, True, True, False])
PHRASES = [{"start": 0, "end": 10, "box": A["box"], "words": [{"start": 0, "end": 3, "kind": "colour"},
                                                              {"start": 4, "end": 10, "kind": "shape"}]},
           {"start": 15, "end": 24, "box": C["box"], "words": [{"start": 15, "end": 19, "kind": "colour"},
                                                               {"start": 20, "end": 24, "kind": "shape"}]}]


def inside(box):
    from pipeline.evaluation.pointing import box_in_crop, patches_in_box
    return patches_in_box(GRID, box_in_crop(box, SIZE, S))


def test_object_prior_expected_rate_hand_computed():
    # Target A: of the three centres only A's (patch 5) is inside -> 1/3; the largest shape is C (patch 14),
    # outside A -> 0. Target C: only C's centre is inside -> 1/3; the largest is C -> 1.
    assert shape_priors(SHAPES, inside(A["box"]), SIZE, GRID, S) == (pytest.approx(1 / 3), 0.0)
    assert shape_priors(SHAPES, inside(C["box"]), SIZE, GRID, S) == (pytest.approx(1 / 3), 1.0)
    # A tie in area is a hit only if every tied shape's centre is inside: A and B tie (C removed).
    assert shape_priors([A, B], inside(A["box"]), SIZE, GRID, S) == (0.5, 0.0)
    assert shape_priors([A, B], inside([0, 0, 64, 32]), SIZE, GRID, S) == (1.0, 1.0)
    # Unknown shapes: no prior.
    assert all(np.isnan(shape_priors(None, inside(A["box"]), SIZE, GRID, S)))


def plan():
    p = np.zeros((7, 16))
    p[1, 0] = 1.0          # red -> patch 0, in A: hit
    p[2, 7] = 1.0          # square -> patch 7, in B: miss
    p[3, 3] = 0.5          # "and": not a trial, but part of the any-word map
    p[4, 9] = 1.0          # blue -> patch 9, in C: hit
    p[5, 9] = 1.0          # band -> patch 9: hit
    return p


def scored(shapes=SHAPES):
    game = PointingGame("plan")
    game.add_caption(plan(), SPANS, CONTENT, PHRASES, SIZE, GRID, S, image="img0", shapes=shapes, caption_id="c0")
    return game.word_trials()


def test_baselines_on_the_same_trials():
    trials = scored()
    assert trials.hit.tolist() == [1, 0, 1, 1]
    np.testing.assert_allclose(trials.object_prior, [1 / 3] * 4)
    assert trials.largest_shape.tolist() == [0, 0, 1, 1]
    # The any-word map sums every content row: patch 9 (2.0) wins, inside C only.
    assert trials.any_word.tolist() == [0, 0, 1, 1]
    assert trials.chance.tolist() == [0.25, 0.25, 0.5, 0.5] and trials.multi.all() and trials.shapes_known
    boot = ClusterBootstrap(trials.image, 100, seed=0)
    base = baseline_result(trials, boot)
    assert base["object_prior"]["all"]["accuracy"] == pytest.approx(1 / 3)
    assert base["largest_shape"]["all"]["accuracy"] == 0.5 and base["any_word"]["all"]["accuracy"] == 0.5
    assert base["uniform"]["all"]["accuracy"] == 0.375 and base["uniform"]["all"]["trials"] == 4
    word = word_result(trials, boot)
    assert word["all"]["accuracy"] == 0.75 and word["all"]["chance"] == 0.375 and word["all"]["images"] == 1
    assert word["colour"] == {"accuracy": 1.0, "chance": 0.375, "trials": 2} and word["shape"]["accuracy"] == 0.5
    top = headline(trials, boot, "plan")
    assert top["pointing_word_all"] == 0.75 and top["object_prior_all"] == pytest.approx(1 / 3)
    assert top["margin_over_object_prior_all"] == pytest.approx(0.75 - 1 / 3)
    # One image: every resample is that image, so each interval is the point itself.
    assert top["margin_over_object_prior_all_ci95"] == pytest.approx([0.75 - 1 / 3] * 2)


def test_the_flat_form_has_no_shape_baselines():
    trials = scored(shapes=None)
    assert not trials.shapes_known
    # Two distinct named boxes in the image's captions: it counts as a multi-shape image.
    assert trials.multi.all()
    boot = ClusterBootstrap(trials.image, 10, seed=0)
    base = baseline_result(trials, boot)
    assert base["object_prior"] == {"all": None, "multi_shape": None, "reason": NEEDS_SHAPES}
    assert base["any_word"]["all"]["accuracy"] == 0.5
    top = headline(trials, boot, "plan")
    assert top["pointing_word_all"] == 0.75 and top["margin_over_object_prior_all"] is None and "reason" in top
    assert "distinct boxes" in word_result(trials, boot)["multi_shape_rule"]


def test_multi_shape_counts_the_images_shapes():
    game = PointingGame()
    for k, shapes in enumerate(([A], [A, B])):      # one image with one shape, one with two
        phrase = dict(PHRASES[0], words=PHRASES[0]["words"][:1])
        game.add_caption(plan(), SPANS, CONTENT, [phrase], SIZE, GRID, S, image=k, shapes=shapes)
    trials = game.word_trials()
    assert trials.multi.tolist() == [False, True]
    word = word_result(trials, ClusterBootstrap(trials.image, 10))
    assert word["multi_shape"]["trials"] == 1 and word["multi_shape"]["images"] == 1


def test_mass_shares_on_a_hand_made_plan():
    # 2x2 grid of a 64-px image: patch centres (16, 16), (48, 16), (16, 48), (48, 48). A is named (patch 0),
    # B is not (patch 1), patches 2 and 3 are background. "red thing in the picture": [CLS] red picture [SEP].
    spans = np.array([[0, 0], [0, 3], [17, 24], [0, 0]])
    content = np.array([False, True, True, False])
    p = np.zeros((4, 4))
    p[1] = [0.2, 0.1, 0.05, 0.05]
    p[2] = [0.0, 0.1, 0.0, 0.2]            # the non-visual word: 0.1 on B, 0.2 on background
    phrases = [{"start": 0, "end": 3, "box": A["box"]}]
    mass = MassShares()
    mass.add_caption(p, spans, content, phrases, SIZE, (2, 2), S, shapes=[A, B],
                     nonvisual=[{"start": 13, "end": 24, "text": "the picture"}])
    r = mass.result()
    # Per patch: 0.2, 0.2, 0.05, 0.25 of 0.7.
    assert (r["named"], r["unnamed"], r["background"]) == pytest.approx((2 / 7, 2 / 7, 3 / 7))
    assert r["patches"] == {"named": 0.25, "unnamed": 0.25, "background": 0.5}
    assert r["nonvisual"] == {"mass_share": pytest.approx(3 / 7), "token_share": 0.5,
                              "off_background": pytest.approx(1 / 3), "tokens": 1}
    flat = MassShares()
    flat.add_caption(p, spans, content, phrases, SIZE, (2, 2), S)
    r = flat.result()
    assert r["named"] == pytest.approx(2 / 7) and r["unnamed"] is None and r["nonvisual"] is None
    assert r["reason"] == NEEDS_SHAPES and r["captions"] == 1


def test_alignment_pass_reads_format_2_end_to_end(tmp_path):
    """A format-2 file through the whole pass: headline, baselines and mass come out defined, and the
    held-out synonym view is reported beside the all-types one."""
    import torch

    from pipeline.config import resolve
    from pipeline.evaluation.alignment import alignment_pass, plan_settings
    from pipeline.modules import StageTwoModules
    from pipeline.training.reader import SplitReader
    from stage2_fixtures import TINY_TRAIN, make_cache

    reader = SplitReader(make_cache(tmp_path / "cache") / "val", 1.0)
    config = resolve(None, TINY_TRAIN)
    torch.manual_seed(0)
    model = StageTwoModules(*reader.dims(), 8, 16, True).eval()
    # Each caption's first two tokens (characters 0-3 and 4-7) name the top-left shape; its third is non-visual.
    words = [{"start": 0, "end": 3, "text": "red", "kind": "colour", "class": "red"},
             {"start": 4, "end": 7, "text": "crimson", "kind": "colour", "class": "red", "held_out": True}]
    phrase = {"start": 0, "end": 7, "box": [0, 0, 32, 32], "words": words, "shape_index": 0}
    shapes = [{"index": 0, "box": [0, 0, 32, 32], "area": 900}, {"index": 1, "box": [32, 32, 64, 64], "area": 1000}]
    grounding = {"format": 2, "captions": {}, "images": {}}
    for cid, row in zip(reader.caption_ids, reader.caption_image):
        grounding["captions"][cid] = {"image_id": f"i{row}", "phrases": [phrase], "nonvisual": [{"start": 8, "end": 11}]}
        grounding["images"][f"i{row}"] = {"shapes": shapes}
    result = alignment_pass(model, reader, "cpu", grounding=grounding, image_size=int(config["extract"]["image_size"]),
                            settings=plan_settings(config["train"]), batch_size=8, synonyms=True, resamples=50)
    top = result.headline
    assert top["trials"] == 2 * reader.num_captions and top["images"] == reader.num_images
    assert top["object_prior_all"] == 0.5 and top["margin_over_object_prior_all"] == pytest.approx(
        top["pointing_word_all"] - 0.5)
    assert top["pointing_word_multi"] == top["pointing_word_all"] and len(top["margin_over_object_prior_all_ci95"]) == 2
    assert result.baselines["largest_shape"]["all"]["accuracy"] == 0.0
    mass = result.mass
    assert mass["named"] + mass["unnamed"] + mass["background"] == pytest.approx(1.0)
    assert mass["nonvisual"]["tokens"] == reader.num_captions
    assert result.synonyms["g"]["held_out"]["types"] == 1 and result.synonyms["g"]["held_out"]["trials"] == 1
    assert result.pointing["similarity"]["word"]["all"]["trials"] == top["trials"]
