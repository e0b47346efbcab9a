"""The pointing game: geometry of boxes on the patch grid, chance by the same rule as a hit, the per-word,
per-token, per-phrase and per-kind trials, ties against the map and non-finite maps."""
import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.evaluation.pointing import (PointingGame, box_in_crop, grounded_tokens, patches_in_box, point_patch,
                                          pointing_hit, word_trials)


def test_box_maps_into_the_center_crop():
    # A 200x100 landscape image: the crop is the central 100x100 square, x in [50, 150].
    assert box_in_crop([50, 0, 100, 50], (200, 100), 100).tolist() == [0.0, 0.0, 0.5, 0.5]
    # A box partly outside the crop is clipped to it; one wholly outside holds no patch centre.
    assert box_in_crop([0, 0, 75, 100], (200, 100), 100).tolist() == [0.0, 0.0, 0.25, 1.0]
    assert not patches_in_box((4, 4), box_in_crop([0, 0, 40, 100], (200, 100), 100)).any()
    # Portrait: 100x300 -> crop y in [100, 200].
    assert box_in_crop([0, 150, 100, 200], (100, 300), 100).tolist() == [0.0, 0.5, 1.0, 1.0]


def test_box_follows_the_encoders_resize_and_crop_exactly():
    # A 640x427 photo at S = 224 (Preprocess): the shorter side 427 -> 224, the longer 640 -> floor(224 *
    # 640 / 427) = 335 (not 335.74), then the crop starts at round((335 - 224) / 2) = 56 (not 55.87).
    # A box edge at x = 521 lands at 521 * 335 / 640 - 56 = 216.72 input pixels, left of the centre of
    # grid column 15 (15.5 * 14 = 217): that patch is outside the box. Dividing by min(w, h) about the
    # image centre instead puts the edge at (521 - 106.5) * 224 / 427 = 217.44 and the patch inside.
    from pipeline.encoders.preprocess import Preprocess
    sx, sy, left, top = Preprocess(224, "bicubic", (0, 0, 0), (1, 1, 1)).to_input(640, 427)
    assert (sx, sy, left, top) == (335 / 640, 224 / 427, 56, 0)
    unit = box_in_crop([400, 100, 521, 300], (640, 427), 224)
    expected = [(400 * 335 / 640 - 56) / 224, 100 / 427, (521 * 335 / 640 - 56) / 224, 300 / 427]
    assert unit == pytest.approx(expected, abs=1e-12)
    inside = patches_in_box((16, 16), unit)
    assert not inside[5 * 16 + 15] and inside[5 * 16 + 14]     # row 5 (centre y = 77 px), columns 15 and 14


def test_patch_centres_in_box_row_major_far_edges_exclusive():
    # 2x2 grid: patch 0 centre (.25, .25) inside [0, .5)^2; patches 1-3 outside.
    assert patches_in_box((2, 2), np.array([0.0, 0.0, 0.5, 0.5])).tolist() == [True, False, False, False]
    # Row-major: on a 2x3 grid patch 4 is row 1, column 1, centre (0.5, 0.75).
    assert np.flatnonzero(patches_in_box((2, 3), np.array([0.4, 0.6, 0.6, 0.9]))).tolist() == [4]
    # Far edges are exclusive: a box whose right and bottom edges lie exactly on patch centres leaves those
    # patches out; near edges on centres keep them. 4x4 grid, centres at 1/8, 3/8, 5/8, 7/8.
    box = np.array([1 / 8, 1 / 8, 5 / 8, 5 / 8])
    assert np.flatnonzero(patches_in_box((4, 4), box)).tolist() == [0, 1, 4, 5]


def test_chance_is_the_share_of_patch_centres_not_the_box_area():
    # 4x4 grid of a 64-px input (patches of 16 px, centres at 8, 24, 40, 56). A box [0, 0, 30, 30) covers
    # 0.22 of the area but holds the centres of patches 0, 1, 4, 5: chance 4/16 = 0.25 exactly.
    spans = np.array([[0, 0], [0, 3], [0, 0]])
    content = np.array([False, True, False])
    plan = np.zeros((3, 16))
    plan[1, 5] = 1.0                                     # "red" -> patch 5 (centre (24, 24)): a hit
    game = PointingGame()
    game.add_caption(plan, spans, content, [{"start": 0, "end": 3, "box": [0, 0, 30, 30]}], (64, 64), (4, 4), 64)
    assert game.result()["token"] == {"accuracy": 1.0, "chance": 0.25, "trials": 1}
    # A box edge exactly on a centre: [0, 0, 24, 24) leaves centre 24 out -> only patch 0, chance 1/16,
    # and the same argmax (patch 5) is now a miss.
    game = PointingGame()
    game.add_caption(plan, spans, content, [{"start": 0, "end": 3, "box": [0, 0, 24, 24]}], (64, 64), (4, 4), 64)
    assert game.result()["token"] == {"accuracy": 0.0, "chance": 1 / 16, "trials": 1}
    # A box holding no centre cannot be hit and is no trial.
    game = PointingGame()
    game.add_caption(plan, spans, content, [{"start": 0, "end": 3, "box": [0, 0, 6, 6]}], (64, 64), (4, 4), 64)
    assert game.result()["token"]["trials"] == 0


def test_grounded_tokens_overlap_the_span():
    spans = np.array([[0, 0], [0, 3], [4, 7], [8, 12], [0, 0]])   # [CLS] "red" "box" "left" [SEP]
    content = np.array([False, True, True, True, False])
    assert grounded_tokens(spans, content, 0, 7).tolist() == [1, 2]
    assert grounded_tokens(spans, content, 5, 6).tolist() == [2]


# "a small crimson box in the top left": tokens [CLS] a small crim ##son box [SEP]
SPANS = np.array([[0, 0], [0, 1], [2, 7], [8, 12], [12, 15], [16, 19], [0, 0]])
CONTENT = np.array([False, True, True, True, True, True, False])
PHRASE = {"start": 2, "end": 19, "box": [0, 0, 32, 32],   # top-left quarter of a 64-px image on a 2x2 grid
          "words": [{"start": 2, "end": 7, "kind": "size"}, {"start": 8, "end": 15, "kind": "colour"},
                    {"start": 16, "end": 19, "kind": "shape"}]}


def test_word_trials_follow_the_annotated_words_and_skip_function_words():
    phrase = dict(PHRASE, words=PHRASE["words"] + [{"start": 0, "end": 1, "kind": "function"}])
    trials = [(kind, tokens.tolist()) for kind, _, _, tokens in word_trials(phrase, SPANS, CONTENT)]
    assert trials == [("size", [2]), ("colour", [3, 4]), ("shape", [5])]
    # Without word annotations every token of the phrase is one trial, of no kind.
    plain = {k: v for k, v in PHRASE.items() if k != "words"}
    assert [(k, t.tolist()) for k, _, _, t in word_trials(plain, SPANS, CONTENT)] == [(None, [2, 3, 4, 5])]


def test_per_token_per_phrase_and_per_kind():
    plan = np.zeros((7, 4))
    plan[2, 0] = 1.0                      # "small" -> patch 0: hit
    plan[3, 0], plan[4, 1] = 0.2, 0.3     # "crim" hit, "##son" miss
    plan[5, 3] = 0.4                      # "box" -> patch 3: miss
    game = PointingGame()
    game.add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64)
    r = game.result()
    assert r["token"] == {"accuracy": 0.5, "chance": 0.25, "trials": 4}
    assert r["size"]["accuracy"] == 1.0 and r["size"]["trials"] == 1
    assert r["colour"] == {"accuracy": 0.5, "chance": 0.25, "trials": 2}
    assert r["shape"]["accuracy"] == 0.0 and r["shape"]["trials"] == 1
    # The phrase scores once: its summed mass is 1.2 on patch 0, 0.3 on 1, 0.4 on 3 -> patch 0, a hit.
    assert r["phrase"] == {"accuracy": 1.0, "chance": 0.25, "trials": 1}
    plan[5, 3] = 2.0                      # now the phrase's mass peaks on patch 3: a miss
    game = PointingGame()
    game.add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64)
    assert game.result()["phrase"]["accuracy"] == 0.0


def test_a_word_split_into_pieces_is_one_trial_on_its_summed_map():
    # "crimson" is crim + ##son: crim puts 0.25 on patch 0 (inside), ##son 0.1 on patch 0 and 0.3 on patch 1
    # (outside). Per token: one hit, one miss. Per word: 0.35 against 0.3 on patch 0, one hit.
    plan = np.zeros((7, 4))
    plan[2, 0] = 1.0                      # "small": hit
    plan[3, 0] = 0.25
    plan[4, 0], plan[4, 1] = 0.1, 0.3
    plan[5, 3] = 0.4                      # "box": miss
    game = PointingGame()
    game.add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64, image="img0")
    trials = game.word_trials()
    assert trials.kind.tolist() == ["size", "colour", "shape"] and trials.hit.tolist() == [1, 1, 0]
    assert game.result()["colour"] == {"accuracy": 0.5, "chance": 0.25, "trials": 2}
    plan[4, 1] = 0.5                      # now the word's sum peaks outside: a miss, the tokens unchanged
    game = PointingGame()
    game.add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64)
    assert game.word_trials().hit.tolist() == [1, 0, 0]
    assert game.result()["colour"]["accuracy"] == 0.5


def test_ties_go_against_the_map():
    inside = np.array([True, False, False, False])
    assert pointing_hit(np.array([0.5, 0.1, 0.0, 0.0]), inside)
    assert not pointing_hit(np.array([0.5, 0.5, 0.0, 0.0]), inside)      # argmax would say patch 0
    assert not pointing_hit(np.zeros(4), inside)                          # a constant map points nowhere
    assert pointing_hit(np.zeros(4), np.ones(4, dtype=bool))              # unless every patch is inside
    assert pointing_hit(np.array([0.5, 0.5, 0.0, 0.0]), np.array([True, True, False, False]))
    # In the game: a word with no mass at all (an all-zero row) is a miss on every unit.
    game = PointingGame()
    game.add_caption(np.zeros((7, 4)), SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64)
    r = game.result()
    assert r["token"]["accuracy"] == 0.0 and r["phrase"]["accuracy"] == 0.0
    assert game.word_trials().hit.tolist() == [0, 0, 0]


def test_a_non_finite_map_is_an_error_naming_the_caption():
    plan = np.zeros((7, 4))
    plan[0, 0] = np.nan                   # a non-content row ([CLS]) is never read
    PointingGame().add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64, caption_id="img3_1")
    plan[3, 2] = np.inf
    with pytest.raises(DataError, match=r"caption img3_1: 1 of .* plan map are not finite"):
        PointingGame("plan").add_caption(plan, SPANS, CONTENT, [PHRASE], (64, 64), (2, 2), 64, caption_id="img3_1")


def test_the_patch_holding_a_point():
    # 4x4 grid of a 64-px image: x = 16 lies in column 1 (16 px per patch), y = 48 in row 3.
    assert point_patch((16, 48), (64, 64), 64, (4, 4)) == 13
    assert point_patch((63.9, 0), (64, 64), 64, (4, 4)) == 3
    # A 200x100 image's crop is x in [50, 150]: a centre left of it goes to the edge column.
    assert point_patch((10, 10), (200, 100), 100, (4, 4)) == 0
    assert point_patch((150, 99), (200, 100), 100, (4, 4)) == 15
