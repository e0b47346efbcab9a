"""SQuAD v1.1 / v2.0 JSON, and the overlapping token windows a start/end head reads.

A context longer than `max_length` is cut into windows that overlap by `stride` tokens, each laid out
as `[CLS] question [SEP] context-part [SEP]`. Every window keeps the character span of each context
token, so a predicted (start, end) token pair maps back to the exact characters of the context.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import BadItems, DataError

VERSIONS = ("auto", "1.1", "2.0")


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context


@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]          # several in dev files; the first is the training target
    is_impossible: bool = False
    plausible_answers: tuple[Answer, ...] = ()


@dataclass
class SquadSet:
    version: str                         # "1.1" or "2.0"
    questions: list[SquadQuestion]


def _answers(raw, where: str, path: Path, qid: str, context: str) -> tuple[Answer, ...]:
    if not isinstance(raw, list):
        raise DataError(f"{where} must be a list", file=str(path), item=qid)
    out = []
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("text"), str) or not isinstance(a.get("answer_start"), int):
            raise DataError(f"each of {where} needs 'text' (string) and 'answer_start' (integer)", file=str(path), item=qid)
        start, text = a["answer_start"], a["text"]
        if context[start:start + len(text)] != text:
            raise DataError(f"answer {text!r} is not at answer_start {start} of the context "
                            f"(found {context[start:start + len(text)]!r})", file=str(path), item=qid)
        out.append(Answer(text, start))
    return tuple(out)


def load_squad(path: Path, version: str = "auto", on_error: str = "fail") -> SquadSet:
    """Read a SQuAD JSON file. `auto` takes the version from the file ("v2.0" or `is_impossible` -> 2.0)."""
    path = Path(path)
    if version not in VERSIONS:
        raise DataError(f"version must be one of {VERSIONS}, got {version!r}")
    if not path.is_file():
        raise DataError("SQuAD file not found", file=str(path))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", file=str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError("not a SQuAD file: the top level needs a 'data' list", file=str(path))
    if version == "auto":
        declared = str(doc.get("version", "")).lstrip("v")
        version = "2.0" if declared.startswith("2") or '"is_impossible"' in path.read_text(encoding="utf-8") else "1.1"
    bad, questions, seen = BadItems(on_error), [], set()
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not isinstance(para.get("qas"), list):
                bad.handle(DataError("paragraph needs 'context' (string) and 'qas' (list)", file=str(path),
                                     item=f"data[{a}].paragraphs[{p}]"))
                continue
            for k, qa in enumerate(para["qas"]):
                try:
                    questions.append(_question(qa, context, version, path, f"data[{a}].paragraphs[{p}].qas[{k}]", seen))
                except DataError as e:
                    bad.handle(e)
    if not questions:
        raise DataError("no usable questions", file=str(path))
    return SquadSet(version, questions)


def _question(qa, context: str, version: str, path: Path, where: str, seen: set) -> SquadQuestion:
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not isinstance(qa.get("question"), str):
        raise DataError("question needs 'id' and 'question' strings", file=str(path), item=where)
    qid = qa["id"]
    if qid in seen:
        raise DataError("duplicate question id", file=str(path), item=qid)
    seen.add(qid)
    impossible = bool(qa.get("is_impossible", False))
    if impossible and version == "1.1":
        raise DataError("an unanswerable (is_impossible) question in a file read as SQuAD 1.1; "
                        "use --version 2.0 or auto", file=str(path), item=qid)
    answers = _answers(qa.get("answers", []), "answers", path, qid, context)
    plausible = _answers(qa.get("plausible_answers", []), "plausible_answers", path, qid, context)
    if not impossible and not answers:
        raise DataError("answerable question without answers", file=str(path), item=qid)
    if impossible and answers:
        raise DataError("is_impossible is true but answers are given", file=str(path), item=qid)
    return SquadQuestion(qid, qa["question"], context, answers, impossible, plausible)


@dataclass
class Window:
    """One `[CLS] question [SEP] context-part [SEP]` input. Labels are token indices; 0 (the [CLS]
    token) stands for "no answer in this window", for impossible questions and for answers the
    window cuts off."""
    item_id: str                 # "<qid>#<window index>"
    qid: str
    input_ids: np.ndarray        # (n,) int32
    type_ids: np.ndarray         # (n,) int32: 0 for [CLS] question [SEP], 1 for the context part
    offsets: np.ndarray          # (n, 2) int32 character span in the context; (-1, -1) off the context
    start: int = 0
    end: int = 0
    spans: np.ndarray = field(default=None)  # (n, 2) raw tokenizer offsets (question tokens: in the question)


def make_windows(questions: list[SquadQuestion], tokenizer, max_length: int = 384, stride: int = 128,
                 batch: int = 256) -> list[Window]:
    """Tokenize question + context into overlapping windows. `stride` is the number of tokens two
    neighbouring windows share (the Hugging Face convention)."""
    windows = []
    for b in range(0, len(questions), batch):
        chunk = questions[b:b + batch]
        _check_room(chunk, tokenizer, max_length, stride)
        enc = tokenizer([q.question.lstrip() for q in chunk], [q.context for q in chunk],
                        truncation="only_second", max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_token_type_ids=True, padding=False)
        counter: dict[str, int] = {}
        for w, ids in enumerate(enc["input_ids"]):
            q = chunk[enc["overflow_to_sample_mapping"][w]]
            seq = enc.sequence_ids(w)
            raw = np.asarray(enc["offset_mapping"][w], dtype=np.int32).reshape(-1, 2)
            offsets = np.where(np.array([s == 1 for s in seq])[:, None], raw, -1).astype(np.int32)
            k = counter[q.qid] = counter.get(q.qid, -1) + 1
            win = Window(f"{q.qid}#{k}", q.qid, np.asarray(ids, np.int32),
                         np.asarray(enc["token_type_ids"][w], np.int32), offsets, spans=raw)
            if q.answers and not q.is_impossible:
                win.start, win.end = _label_window(offsets, q.answers[0])
            windows.append(win)
    return windows


def _check_room(questions: list[SquadQuestion], tokenizer, max_length: int, stride: int) -> None:
    """The tokenizer needs each window to hold more context tokens than the stride (else it panics in Rust,
    past any error handler): max_length - question tokens - 3 specials > stride."""
    lengths = tokenizer([q.question.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
    for q, ids in zip(questions, lengths):
        room = max_length - len(ids) - 3
        if room <= stride:
            raise DataError(f"a question of {len(ids)} tokens leaves {room} context tokens a window at "
                            f"squad_max_length {max_length}, not more than the stride {stride}: raise "
                            "downstream.squad_max_length or lower downstream.stride", item=q.qid)


def _label_window(offsets: np.ndarray, answer: Answer) -> tuple[int, int]:
    first, last = answer.start, answer.start + len(answer.text)
    ctx = np.flatnonzero(offsets[:, 0] >= 0)
    if len(ctx) == 0 or offsets[ctx[0], 0] > first or offsets[ctx[-1], 1] < last:
        return 0, 0
    # The first token that ends after the answer starts, and the last that starts before it ends.
    start = ctx[np.flatnonzero(offsets[ctx, 1] > first)[0]]
    end = ctx[np.flatnonzero(offsets[ctx, 0] < last)[-1]]
    return int(start), int(end)
