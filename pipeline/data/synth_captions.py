"""Captions for a synthetic scene, with the character span of every phrase that names a shape.

A caption is built as a list of segments: plain strings, or (text, shape index) for the words that
name one shape (size + colour + noun, in either word order). Joining the segments gives the caption
and, at the same time, the exact span of each naming phrase, so grounding never has to be
recovered by searching the text. Relations come from the shapes' real positions and drawing order.
"""
from __future__ import annotations

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

Segment = str | tuple[str, int, list[dict]]   # plain text, or (phrase, shape index, its annotated words)


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


def noun_phrase(rng: np.random.Generator, shape: Shape, index: int) -> list[Segment]:
    """["a ", ("small red circle", index, words)] and its variants; the span covers size, colour and noun.
    `words` gives each content word's [start, end) within the phrase, its kind (size, colour, shape) and
    its class (the canonical name its synonyms share), so evaluation can score colour words, shape nouns
    and size words apart; "in" and "coloured" are function words and carry no entry."""
    colour, noun, size = (pick(rng, COLOUR_WORDS[shape.colour]), pick(rng, SHAPE_WORDS[shape.kind]),
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


def assemble(rng: np.random.Generator, segments: list[Segment], shapes: list[Shape]) -> tuple[str, list[dict]]:
    """Join segments into the caption text and the grounded phrases with their character spans."""
    if rng.random() < 0.5:  # capitalise the first letter: same length, so no span moves
        first = segments[0]
        segments = [(first[0][0].upper() + first[0][1:], *first[1:]) if isinstance(first, tuple)
                    else first[0].upper() + first[1:]] + segments[1:]
    if rng.random() < 0.5:
        segments = segments + ["."]
    text, phrases = "", []
    for seg in segments:
        if isinstance(seg, tuple):
            words, k, annotated = seg
            s, at = shapes[k], len(text)
            phrases.append({"start": at, "end": at + len(words), "text": words,
                            "box": list(s.box), "shape": s.kind, "colour": s.colour,
                            "words": [dict(w, start=at + w["start"], end=at + w["end"]) for w in annotated]})
            text += words
        else:
            text += seg
    return text, phrases


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
        text, phrases = assemble(rng, segments, shapes)
        if text.lower().rstrip(".") not in seen:  # differing only in case or a full stop is not "different"
            seen.add(text.lower().rstrip("."))
            out.append((text, phrases))
    return out
