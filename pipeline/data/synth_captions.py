"""Captions for a synthetic scene, with the character span of every phrase that names a shape.

A caption is built as a list of segments: plain strings, or (text, shape index) for the words that
name one shape (size + colour + noun, in either word order). Joining the segments gives the caption
and, at the same time, the exact span of each naming phrase, so grounding never has to be
recovered by searching the text. Relations come from the shapes' real positions and drawing order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.synth_scene import Shape

COLOUR_WORDS = {"red": ["red", "crimson", "scarlet"], "green": ["green", "emerald"], "blue": ["blue", "cobalt"],
                "yellow": ["yellow", "golden"], "purple": ["purple", "violet"], "orange": ["orange", "tangerine"],
                "cyan": ["cyan", "turquoise"]}
SHAPE_WORDS = {"circle": ["circle", "disc", "round shape"], "square": ["square", "box", "block"],
               "triangle": ["triangle", "three-sided shape"], "star": ["star", "five-pointed star"],
               "cross": ["cross", "plus sign"], "diamond": ["diamond", "rhombus", "lozenge"]}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["", "", "medium-sized"], "large": ["large", "big", "huge"]}
BACKGROUND_WORDS = {"gradient": ["on a gradient background", "against a smooth gradient"],
                    "stripes": ["on a striped background", "against stripes"],
                    "noise": ["on a noisy background", "against a speckled backdrop"],
                    "plain": ["on a plain background", "against a flat backdrop"]}
RELATION_WORDS = {"left": ["to the left of", "left of", "next to", "beside"],
                  "right": ["to the right of", "right of", "next to", "beside"],
                  "above": ["above", "over"], "below": ["below", "under", "beneath"],
                  "near": ["near", "close to"],
                  "behind": ["partly hidden behind", "behind"], "front": ["in front of", "partly covering"]}
COUNT_WORDS = {2: ["two", "2"], 3: ["three", "3"]}
DOMINANCE = 1.3  # a relation is "left of" only if the horizontal offset clearly beats the vertical one
# The scenes preset keeps one synonym per colour and per shape out of every training caption, so val and
# test can ask whether a word never seen beside an image still points at its shape.
HELD_OUT = {"colour": {"red": "scarlet", "green": "emerald", "blue": "cobalt", "yellow": "golden",
                       "purple": "violet", "orange": "tangerine", "cyan": "turquoise"},
            "shape": {"circle": "disc", "square": "block", "triangle": "three-sided shape",
                      "star": "five-pointed star", "cross": "plus sign", "diamond": "lozenge"}}
# Words that name nothing in the image (the scenes preset): a caption's words are not all about regions.
ASIDES_BEFORE = {"in this picture": ", ", "as you can see": ", ", "I think": " ", "apparently": " ",
                 "in my opinion": ", ", "if I remember correctly": ", "}   # each with what follows it
ASIDES_AFTER = ["in this picture", "I think", "nicely drawn", "as you can see", "if I remember correctly",
                "it seems"]


class Aside(str):
    """Words that name no region ("in this picture", "I think"): their span is recorded, not grounded."""


@dataclass(frozen=True)
class Vocab:
    colours: dict[str, list[str]]
    shapes: dict[str, list[str]]
    held_out: frozenset[str] = frozenset()   # surface forms marked "held_out" in the grounding


SIMPLE_VOCAB = Vocab(COLOUR_WORDS, SHAPE_WORDS)
Segment = str | tuple[str, int, list[dict]]   # plain text (maybe an Aside), or (phrase, shape index, its words)


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[rng.integers(len(options))]


def relation(a: Shape, b: Shape, i: int, j: int, overlapping: bool, rng: np.random.Generator) -> str:
    """Where shape a (drawn i-th) is relative to shape b (drawn j-th); image y grows downwards."""
    if overlapping and rng.random() < 0.5:
        return "behind" if i < j else "front"
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= DOMINANCE * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= DOMINANCE * abs(dx):
        return "above" if dy < 0 else "below"
    return "near"


def position(shape: Shape, size: int) -> str:
    col = ("left", "centre", "right")[min(2, int(3 * shape.cx / size))]
    row = ("top", "middle", "bottom")[min(2, int(3 * shape.cy / size))]
    if (row, col) == ("middle", "centre"):
        return "in the centre"
    if col == "centre":
        return f"at the {row}"
    if row == "middle":
        return f"on the {col}"
    return f"in the {row} {col} corner"


def noun_phrase(rng: np.random.Generator, shape: Shape, index: int, vocab: "Vocab | None" = None) -> list[Segment]:
    """["a ", ("small red circle", index, words)] and its variants; the span covers size, colour and noun.
    `words` gives each content word's [start, end) within the phrase, its kind (size, colour, shape) and
    its class (the canonical name its synonyms share), so evaluation can score colour words, shape nouns
    and size words apart; "in" and "coloured" are function words and carry no entry. A word the vocabulary
    holds out of training is marked "held_out": true."""
    vocab = vocab or SIMPLE_VOCAB
    colour, noun, size = (pick(rng, vocab.colours[shape.colour]), pick(rng, vocab.shapes[shape.kind]),
                          pick(rng, SIZE_WORDS[shape.size]))
    form = rng.integers(4)
    kinds = {"size": (size, shape.size), "colour": (colour, shape.colour), "shape": (noun, shape.kind)}
    words = (["size", "colour", "shape"], ["colour", "shape"], ["size", "shape", "in", "colour"],
             ["size", "shape", "coloured", "colour"])[form]
    phrase, annotated = "", []
    for w in words:
        text, cls = kinds[w] if w in kinds else (w, None)
        if not text:   # the unnamed medium size
            continue
        phrase += " " if phrase else ""
        if cls is not None:
            annotated.append({"start": len(phrase), "end": len(phrase) + len(text), "text": text, "kind": w,
                              "class": cls})
            if text in vocab.held_out:
                annotated[-1]["held_out"] = True
        phrase += text
    return ["an " if phrase[0] in "aeiou" else "a ", (phrase, index, annotated)]


def single(rng, shapes, bg, size, overlaps) -> list[Segment]:
    i = int(rng.integers(len(shapes)))
    np_ = noun_phrase(rng, shapes[i], i)
    form = rng.integers(4)
    if form == 0:
        return np_ + [" " + position(shapes[i], size)]
    if form == 1:
        return ["there is "] + np_ + [" " + position(shapes[i], size)]
    if form == 2:
        return np_ + [" " + pick(rng, BACKGROUND_WORDS[bg])]
    return ["a picture of "] + np_


def related(rng, shapes, bg, size, overlaps) -> list[Segment] | None:
    if len(shapes) < 2:
        return None
    i, j = (int(k) for k in rng.permutation(len(shapes))[:2])
    rel = pick(rng, RELATION_WORDS[relation(shapes[i], shapes[j], i, j, (i, j) in overlaps, rng)])
    a, b = noun_phrase(rng, shapes[i], i), noun_phrase(rng, shapes[j], j)
    if rng.random() < 0.3:
        return ["the ", a[1], f" is {rel} the ", b[1]]
    return a + [f" {rel} "] + b


def listing(rng, shapes, bg, size, overlaps) -> list[Segment]:
    order = [int(k) for k in rng.permutation(len(shapes))]
    parts: list[Segment] = []
    for n, k in enumerate(order):
        if n:
            parts.append(" and " if n == len(order) - 1 else ", ")
        parts += noun_phrase(rng, shapes[k], k)
    if len(shapes) == 1:
        head = ["a single ", parts[1]]
    else:
        head = [pick(rng, [f"{pick(rng, COUNT_WORDS[len(shapes)])} shapes: ", "an image with "])] + parts
    return head + ([" " + pick(rng, BACKGROUND_WORDS[bg])] if rng.random() < 0.5 else [])


def assemble(rng: np.random.Generator, segments: list[Segment], shapes: list[Shape],
             shape_index: bool = False) -> tuple[str, list[dict], list[dict]]:
    """Join segments into the caption text, the grounded phrases and the asides, with their character spans;
    with `shape_index`, each phrase also names its shape's position in `shapes`."""
    if rng.random() < 0.5:  # capitalise the first letter: same length, so no span moves
        first = segments[0]
        segments = [(first[0][0].upper() + first[0][1:], *first[1:]) if isinstance(first, tuple)
                    else type(first)(first[0].upper() + first[1:])] + segments[1:]
    if rng.random() < 0.5:
        segments = segments + ["."]
    text, phrases, asides = "", [], []
    for seg in segments:
        if isinstance(seg, tuple):
            words, k, annotated = seg
            s, at = shapes[k], len(text)
            phrases.append({"start": at, "end": at + len(words), "text": words,
                            "box": list(s.box), "shape": s.kind, "colour": s.colour,
                            "words": [dict(w, start=at + w["start"], end=at + w["end"]) for w in annotated]})
            if shape_index:
                phrases[-1]["shape_index"] = k
            text += words
        else:
            if isinstance(seg, Aside):
                asides.append({"start": len(text), "end": len(text) + len(seg), "text": str(seg)})
            text += seg
    return text, phrases, asides


def make_captions(rng: np.random.Generator, shapes: list[Shape], bg: str, size: int, count: int,
                  overlaps: set[tuple[int, int]]) -> list[tuple[str, list[dict]]]:
    """`count` different captions; with two or more shapes, the first is a relation and the second
    lists every shape, so each image has captions of several kinds."""
    plan = [related, listing] if len(shapes) > 1 else [listing]
    out, seen = [], set()
    for attempt in range(50 * count):
        if len(out) == count:
            break
        template = plan[attempt] if attempt < len(plan) else (single, related, listing)[rng.integers(3)]
        segments = template(rng, shapes, bg, size, overlaps)
        if segments is None:
            continue
        text, phrases, _ = assemble(rng, segments, shapes)
        if text.lower().rstrip(".") not in seen:  # differing only in case or a full stop is not "different"
            seen.add(text.lower().rstrip("."))
            out.append((text, phrases))
    return out


def scene_vocab(held_out_synonyms: bool, training: bool) -> Vocab:
    """The scenes preset's words: training captions never use a held-out synonym; val and test use them all."""
    if not held_out_synonyms:
        return SIMPLE_VOCAB
    held = {**HELD_OUT["colour"], **HELD_OUT["shape"]}
    if not training:
        return Vocab(COLOUR_WORDS, SHAPE_WORDS, frozenset(held.values()))
    keep = lambda words: {cls: [w for w in ws if w != held[cls]] for cls, ws in words.items()}
    return Vocab(keep(COLOUR_WORDS), keep(SHAPE_WORDS))


def name_one(rng, shapes, k, size, vocab) -> list[Segment]:
    np_ = noun_phrase(rng, shapes[k], k, vocab)
    form = rng.integers(3)
    if form == 0:
        return np_ + [" " + position(shapes[k], size)]
    if form == 1:
        return ["there is "] + np_ + [" " + position(shapes[k], size)]
    return ["one of the shapes is "] + np_


def name_two(rng, shapes, i, j, overlaps, vocab) -> list[Segment]:
    a, b = noun_phrase(rng, shapes[i], i, vocab), noun_phrase(rng, shapes[j], j, vocab)
    form = rng.integers(4)
    if form == 0:
        return a + [" and "] + b
    rel = pick(rng, RELATION_WORDS[relation(shapes[i], shapes[j], i, j, (i, j) in overlaps, rng)])
    if form == 1:
        return ["the ", a[1], f" is {rel} the ", b[1]]
    return a + [f" {rel} "] + b


def with_aside(rng: np.random.Generator, segments: list[Segment]) -> list[Segment]:
    """The caption with a non-visual clause before or after it; the clause is its own segment, so its span
    never overlaps a phrase."""
    if rng.random() < 0.5:
        words = pick(rng, list(ASIDES_BEFORE))
        return [Aside(words), ASIDES_BEFORE[words]] + segments
    return segments + [", ", Aside(pick(rng, ASIDES_AFTER))]


def make_scene_captions(rng: np.random.Generator, shapes: list[Shape], size: int, count: int,
                        overlaps: set[tuple[int, int]], named: tuple[int, int], nonvisual_fraction: float,
                        vocab: Vocab) -> list[tuple[str, list[dict], list[dict]]]:
    """`count` different captions, each naming `named` shapes (one, or two side by side or related) and
    leaving the rest of the scene out; about `nonvisual_fraction` of them carry an aside."""
    out, seen = [], set()
    for _ in range(50 * count):
        if len(out) == count:
            break
        n = int(rng.integers(named[0], named[1] + 1))
        picked = [int(k) for k in rng.choice(len(shapes), n, replace=False)]
        segments = (name_one(rng, shapes, picked[0], size, vocab) if n == 1
                    else name_two(rng, shapes, picked[0], picked[1], overlaps, vocab))
        if rng.random() < nonvisual_fraction:
            segments = with_aside(rng, segments)
        text, phrases, asides = assemble(rng, segments, shapes, shape_index=True)
        if text.lower().rstrip(".") not in seen:
            seen.add(text.lower().rstrip("."))
            out.append((text, phrases, asides))
    return out
