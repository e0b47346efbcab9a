"""Synonym precision@1 on hand-made captions whose vectors fix the answer."""
import math

import numpy as np
import pytest

from pipeline.evaluation.synonyms import WordTypeAverager, held_out_types, word_occurrences, word_type


def tokenise(caption: str, pieces: list[str], pad: int = 2):
    """Character spans of `pieces` found left to right in the caption ("##x" continues the previous
    word), with a [CLS]-like (0, 0) row first and `pad` padding rows (0, 0) last."""
    spans, pos = [(0, 0)], 0
    for piece in pieces:
        text = piece[2:] if piece.startswith("##") else piece
        start = caption.index(text, pos)
        spans.append((start, start + len(text)))
        pos = start + len(text)
    spans += [(0, 0)] * pad
    content = np.array([False] + [True] * len(pieces) + [False] * pad)
    return np.array(spans, dtype=np.int64), content


def word(caption: str, text: str, kind: str, cls: str, after: int = 0) -> dict:
    start = caption.index(text, after)
    return {"start": start, "end": start + len(text), "text": text, "kind": kind, "class": cls}


def phrase(*words: dict) -> dict:
    return {"start": words[0]["start"], "end": words[-1]["end"], "words": list(words)}


def test_word_occurrences_picks_colour_and_shape_words_and_their_tokens():
    caption = "a small Crimson five-pointed star"
    pieces = ["a", "small", "Crim", "##son", "five", "-", "pointed", "star"]
    spans, content = tokenise(caption, pieces)
    ph = phrase(word(caption, "small", "size", "small"), word(caption, "Crimson", "colour", "red"),
                word(caption, "five-pointed star", "shape", "star"))
    occ = word_occurrences(spans, content, [ph])
    assert [(t, k, c) for t, k, c, _ in occ] == [("crimson", "colour", "red"), ("five-pointed star", "shape", "star")]
    np.testing.assert_array_equal(occ[0][3], [3, 4])
    np.testing.assert_array_equal(occ[1][3], [5, 6, 7, 8])
    # A token outside the content mask is not part of the word; a word left with no token is skipped.
    content[4] = False
    content[5:9] = False
    occ = word_occurrences(spans, content, [ph])
    assert len(occ) == 1
    np.testing.assert_array_equal(occ[0][3], [3])


def test_padding_rows_never_overlap_a_word_at_offset_zero():
    caption = "red circle"
    spans, content = tokenise(caption, ["red", "circle"])
    content[:] = True                     # even if the mask let padding through
    occ = word_occurrences(spans, content, [phrase(word(caption, "red", "colour", "red"))])
    np.testing.assert_array_equal(occ[0][3], [1])


def test_word_type_normalises_case_and_spaces():
    assert word_type("Five-pointed  Star") == "five-pointed star"


# Vectors of the types (3-d): red's nearest is crimson (hit), crimson's is red (hit), blue's is red
# (cos .8 against .795 for crimson and .48 for cobalt: a miss), cobalt's is blue (hit). "square" is
# alone in its class: no trial (its nearest is red, cos .0995). Precision 3/4 over 4 trials, 5 types.
TARGET = {"red": [1.0, 0.0, 0.0], "crimson": [0.9, 0.1, 0.0], "blue": [0.8, 0.0, 0.6], "cobalt": [0.0, 0.6, 0.8],
          "square": [0.1, -1.0, 0.0]}


def build(averager: WordTypeAverager, space: str = "g", junk: float = 100.0) -> None:
    """Two captions whose token vectors average to TARGET only if occurrences, multi-token words and
    the content mask are all handled right."""
    # Caption 1: "red" (vector red + d), "cr ##im ##son" (its 3 tokens average to crimson; a 4th
    # overlapping token is masked out and carries junk), "blue square".
    c1 = "a red crimson blue square"
    spans, content = tokenise(c1, ["a", "red", "cr", "##im", "##son", "blue", "square"])
    spans = np.insert(spans, 5, [c1.index("son"), c1.index("son") + 3], axis=0)   # masked token inside "crimson"
    content = np.insert(content, 5, False)
    vec = np.zeros((len(spans), 3))
    vec[0] = vec[1] = junk                        # [CLS] and "a": not words
    vec[2] = [1.0, 0.5, 0.0]                      # red, first occurrence
    vec[3], vec[4], vec[6] = [0.9, 0.0, 0.0], [0.9, 0.3, 0.0], [0.9, 0.0, 0.0]
    vec[5] = [0.0, 0.0, junk]                     # masked out
    vec[7], vec[8] = TARGET["blue"], TARGET["square"]
    vec[-2:] = junk                               # padding
    ph1 = [phrase(word(c1, "red", "colour", "red")), phrase(word(c1, "crimson", "colour", "red")),
           phrase(word(c1, "blue", "colour", "blue"), word(c1, "square", "shape", "square"))]
    averager.add(space, vec, word_occurrences(spans, content, ph1))

    # Caption 2: "Red" again (so red's mean is exactly TARGET's), "co ##balt" in two tokens.
    c2 = "Red and cobalt"
    spans, content = tokenise(c2, ["Red", "and", "co", "##balt"])
    vec = np.full((len(spans), 3), junk)
    vec[1] = [1.0, -0.5, 0.0]
    vec[3], vec[4] = [0.0, 1.2, 0.8], [0.0, 0.0, 0.8]
    ph2 = [phrase(word(c2, "Red", "colour", "red")), phrase(word(c2, "cobalt", "colour", "blue"))]
    averager.add(space, vec, word_occurrences(spans, content, ph2))


def test_means_average_tokens_then_occurrences():
    avg = WordTypeAverager()
    build(avg)
    types, means = avg.means("g")
    assert types == sorted(TARGET)
    np.testing.assert_allclose(means, [TARGET[t] for t in types], rtol=0, atol=1e-15)
    assert means.dtype == np.float64
    assert avg.counts["g"] == {"red": 2, "crimson": 1, "blue": 1, "square": 1, "cobalt": 1}


def test_precision_at_1_hand_computed():
    avg = WordTypeAverager()
    build(avg)
    result = avg.precision_at_1("g", neighbours=True)
    assert result["precision_at_1"] == 0.75
    assert result["trials"] == 4
    assert result["types"] == 5
    assert result["nearest"] == {"red": "crimson", "crimson": "red", "blue": "red", "cobalt": "blue",
                                 "square": "red"}
    assert "nearest" not in avg.precision_at_1("g")


def test_spaces_are_kept_apart():
    avg = WordTypeAverager()
    build(avg, "g")
    caption = "red crimson blue"
    spans, content = tokenise(caption, caption.split())
    occ = word_occurrences(spans, content, [phrase(word(caption, t, "colour", c)) for t, c in
                                            [("red", "red"), ("crimson", "red"), ("blue", "blue")]])
    # In "h" crimson sits next to blue: red -> blue (miss), crimson -> blue (miss); blue has no synonym here.
    avg.add("h", np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [9.0, 9.0], [9.0, 9.0]]), occ)
    assert avg.precision_at_1("h") == {"precision_at_1": 0.0, "trials": 2, "types": 3}
    assert avg.precision_at_1("g")["precision_at_1"] == 0.75
    with pytest.raises(KeyError):
        avg.precision_at_1("random")


def test_ties_go_against_the_space():
    avg = WordTypeAverager()
    occ = [("red", "colour", "red", np.array([0])), ("crimson", "colour", "red", np.array([1])),
           ("blue", "colour", "blue", np.array([2]))]
    avg.add("g", np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), occ)   # all at cosine 1
    result = avg.precision_at_1("g", neighbours=True)
    # blue has no synonym (no trial); its tie between crimson and red falls to the first in sorted order.
    assert result == {"precision_at_1": 0.0, "trials": 2, "types": 3,
                      "nearest": {"red": "blue", "crimson": "blue", "blue": "crimson"}}


def test_no_trials_and_bad_labels():
    avg = WordTypeAverager()
    avg.add("g", np.eye(2), [("red", "colour", "red", np.array([0])), ("circle", "shape", "circle", np.array([1]))])
    result = avg.precision_at_1("g")
    assert math.isnan(result["precision_at_1"]) and result["trials"] == 0 and result["types"] == 2
    avg.add("empty", np.zeros((3, 2)), [])
    assert avg.precision_at_1("empty")["types"] == 0
    with pytest.raises(ValueError):
        avg.add("g", np.eye(2), [("red", "colour", "orange", np.array([0]))])
    with pytest.raises(ValueError):
        avg.add("g", np.eye(3), [("red", "colour", "red", np.array([0]))])


def test_precision_at_1_on_held_out_types():
    avg = WordTypeAverager()
    build(avg)
    # crimson -> red (hit) and blue -> red (miss); their neighbours are sought among all five types.
    avg.held_out.update({"crimson", "blue"})
    assert avg.precision_at_1("g", held_out=True) == {"precision_at_1": 0.5, "trials": 2, "types": 2}
    avg.held_out.add("square")            # present but alone in its class: counted as a type, no trial
    assert avg.precision_at_1("g", held_out=True) == {"precision_at_1": 0.5, "trials": 2, "types": 3}
    assert avg.precision_at_1("g")["precision_at_1"] == 0.75        # the all-types number is unchanged
    empty = WordTypeAverager()
    build(empty)
    r = empty.precision_at_1("g", held_out=True)
    assert math.isnan(r["precision_at_1"]) and r["trials"] == 0 and r["types"] == 0


def test_held_out_types_come_from_the_word_flags():
    caption = "a Crimson star and a red circle"
    ph = [phrase(dict(word(caption, "Crimson", "colour", "red"), held_out=True), word(caption, "star", "shape", "star")),
          phrase(word(caption, "red", "colour", "red"), dict(word(caption, "circle", "shape", "circle"), held_out=False))]
    assert held_out_types(ph) == {"crimson"}
