"""SQuAD: both file versions, malformed files named by file and question id, windows that map answers
back to the exact characters, and the post-processing of constructed logits."""
import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from pipeline.downstream.fixtures import write_squad
from pipeline.downstream.squad import Answer, SquadQuestion, load_squad, make_windows
from pipeline.downstream.squad_postprocess import predict_answers
from pipeline.encoders.offline import resolve_text_name
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_text_name("offline:minilm"))


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("squad")
    for v in ("1.1", "2.0"):
        write_squad(root, v, n_train=4, n_dev=4)
    return root


def test_both_versions_load(squad_dir):
    v1 = load_squad(squad_dir / "dev-v1.1.json")
    v2 = load_squad(squad_dir / "dev-v2.0.json")
    assert (v1.version, v2.version) == ("1.1", "2.0")
    assert len(v1.questions) == 12 and len(v2.questions) == 16
    impossible = [q for q in v2.questions if q.is_impossible]
    assert len(impossible) == 4 and all(not q.answers and q.plausible_answers for q in impossible)
    assert any(len(q.answers) == 3 for q in v1.questions)  # dev files carry several gold answers
    for q in v1.questions:
        assert all(q.context[a.start:a.start + len(a.text)] == a.text for a in q.answers)
    assert load_squad(squad_dir / "dev-v1.1.json", version="2.0").version == "2.0"
    with pytest.raises(DataError, match="item q500x: an unanswerable .* read as SQuAD 1.1"):
        load_squad(squad_dir / "dev-v2.0.json", version="1.1")


def _doc(qa: dict, context: str = "Paris is the capital of France.") -> dict:
    return {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}


@pytest.mark.parametrize("qa,reason", [
    ({"id": "q1", "question": "?", "answers": [{"text": "Lyon", "answer_start": 0}], "is_impossible": False},
     "answer 'Lyon' is not at answer_start 0"),
    ({"id": "q1", "question": "?", "answers": [{"text": "Paris"}], "is_impossible": False},
     "needs 'text' (string) and 'answer_start' (integer)"),
    ({"id": "q1", "question": "?", "answers": [], "is_impossible": False}, "answerable question without answers"),
    ({"id": "q1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": True},
     "is_impossible is true but answers are given"),
])
def test_malformed_question_names_file_and_id(tmp_path, qa, reason):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_doc(qa)))
    with pytest.raises(DataError) as e:
        load_squad(path)
    assert f"file {path}, item q1" in str(e.value) and reason in str(e.value)
    good = dict(qa, id="q2", answers=[{"text": "France", "answer_start": 24}], is_impossible=False)
    doc = _doc(qa)
    doc["data"][0]["paragraphs"][0]["qas"].append(good)
    path.write_text(json.dumps(doc))
    assert [q.qid for q in load_squad(path, on_error="skip").questions] == ["q2"]


def test_malformed_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"data": [\n  {"title": }\n]}')
    with pytest.raises(DataError, match=r"x.json: invalid JSON at line 2 column 13"):
        load_squad(path)
    path.write_text('{"articles": []}')
    with pytest.raises(DataError, match="needs a 'data' list"):
        load_squad(path)
    qa = {"id": "q1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}
    doc = _doc(qa)
    doc["data"][0]["paragraphs"][0]["qas"].append(qa)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="item q1: duplicate question id"):
        load_squad(path)


CONTEXT = ("In 1999 the price of Brenland copper rose by 12.5% (a record), says the Bank of Zorvia; "
           "exports doubled in the following years, and by 2004 the river port at Kesswick handled "
           "most of the trade, while the older harbour at Selby-on-Tay slowly closed.")


def test_windows_map_answers_back_to_exact_characters(tokenizer):
    answers = ["12.5%", "Bank of Zorvia", "Selby-on-Tay", "Kesswick", "1999"]
    qs = [SquadQuestion(f"q{i}", f"What about {a.split()[0]}?", CONTEXT, (Answer(a, CONTEXT.index(a)),))
          for i, a in enumerate(answers)]
    qs.append(SquadQuestion("none", "Who won?", CONTEXT, (), is_impossible=True))
    windows = make_windows(qs, tokenizer, max_length=32, stride=8)
    by_q = {}
    for w in windows:
        by_q.setdefault(w.qid, []).append(w)
        assert len(w.input_ids) <= 32 and w.input_ids[0] == tokenizer.cls_token_id
        ctx = np.flatnonzero(w.offsets[:, 0] >= 0)
        assert (w.type_ids[ctx] == 1).all() and (w.type_ids[:ctx[0]] == 0).all()
    for q in qs:
        ws = by_q[q.qid]
        assert len(ws) > 2 and [w.item_id for w in ws] == [f"{q.qid}#{k}" for k in range(len(ws))]
        for a, b in zip(ws, ws[1:]):  # neighbours share `stride` context tokens
            ca, cb = a.offsets[a.offsets[:, 0] >= 0], b.offsets[b.offsets[:, 0] >= 0]
            assert (ca[-8:] == cb[:8]).all()
        labelled = [w for w in ws if w.start > 0]
        if q.is_impossible:
            assert not labelled and all(w.end == 0 for w in ws)
            continue
        assert labelled, f"no window holds the answer of {q.qid}"
        for w in labelled:
            assert q.context[w.offsets[w.start, 0]:w.offsets[w.end, 1]] == q.answers[0].text
        for w in ws:  # a window that cuts the answer off points at [CLS]
            lo, hi = w.offsets[w.offsets[:, 0] >= 0][[0, -1]]
            inside = lo[0] <= q.answers[0].start and q.answers[0].start + len(q.answers[0].text) <= hi[1]
            assert (w.start > 0) == inside


def _logits(n: int, **peaks) -> np.ndarray:
    x = np.zeros(n)
    for k, v in peaks.items():
        x[int(k[1:])] = v
    return x


def test_postprocess_constructed_logits(tokenizer):
    q = SquadQuestion("q", "What rose?", CONTEXT, (Answer("12.5%", CONTEXT.index("12.5%")),))
    ws = make_windows([q], tokenizer, max_length=32, stride=8)
    w = next(w for w in ws if w.start > 0)
    k = ws.index(w)
    n = [len(x.input_ids) for x in ws]
    starts, ends = [np.zeros(m) for m in n], [np.zeros(m) for m in n]
    starts[k], ends[k] = _logits(n[k], **{f"t{w.start}": 5.0}), _logits(n[k], **{f"t{w.end}": 5.0})
    # Decoys that must be rejected: a higher end before the start, and a question token.
    ends[k][w.start - 1] = 9.0
    starts[k][1] = 20.0
    pred = predict_answers([q], ws, starts, ends, version="1.1", n_best=5, max_answer_length=30)["q"]
    assert pred.text == "12.5%" and pred.score == pytest.approx(10.0)
    # The same span but a maximum length shorter than the answer: another (lower-scoring) span wins.
    short = predict_answers([q], ws, starts, ends, version="1.1", n_best=5, max_answer_length=w.end - w.start)["q"]
    assert short.text != "12.5%" and short.score < 10.0


def test_no_answer_threshold(tokenizer):
    q = SquadQuestion("q", "What rose?", CONTEXT, (), is_impossible=True)
    ws = make_windows([q], tokenizer, max_length=32, stride=8)
    c = int(np.flatnonzero(ws[0].offsets[:, 0] >= 0)[0])
    starts = [np.r_[3.0, np.zeros(len(w.input_ids) - 1)] for w in ws]  # null score 3 + 3 = 6 in each window
    ends = [s.copy() for s in starts]
    starts[0][c], ends[0][c] = 2.5, 2.5  # best span scores 5
    v2 = predict_answers([q], ws, starts, ends, version="2.0", null_threshold=0.0)["q"]
    assert v2.text == "" and v2.null_score == pytest.approx(6.0) and v2.score == pytest.approx(5.0)
    assert predict_answers([q], ws, starts, ends, version="2.0", null_threshold=1.5)["q"].text != ""
    assert predict_answers([q], ws, starts, ends, version="1.1")["q"].text != ""  # v1.1 always answers


def test_a_question_too_long_for_the_stride_is_one_error_naming_it(tokenizer):
    # Left to the tokenizer, this is a Rust panic that no error handler catches.
    long_q = SquadQuestion("long", "what colour is the small circle left of the big square " * 3, CONTEXT,
                           (Answer("1999", CONTEXT.index("1999")),))
    fits = SquadQuestion("short", "Who won?", CONTEXT, (), is_impossible=True)
    assert make_windows([fits], tokenizer, max_length=32, stride=8)
    with pytest.raises(DataError, match=r"item long: a question of \d+ tokens leaves -?\d+ context tokens .* "
                                        r"squad_max_length 32, not more than the stride 8"):
        make_windows([fits, long_q], tokenizer, max_length=32, stride=8)
