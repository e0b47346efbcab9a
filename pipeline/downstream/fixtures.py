"""Small GLUE and SQuAD files in the exact official layouts, with a signal a model can learn.

No GLUE or SQuAD file can be downloaded on the project's machines, so tests and docs/downstream.md run on
these. Each task gets the official file names, headers and label spellings; the labels follow a
simple rule (sentiment words, word overlap, a "not" in the hypothesis, ...) so that a head trained
on them does better than chance, but they say nothing about real GLUE scores.

    OUT/glue/<TASK>/train.tsv, dev.tsv (MNLI: dev_matched.tsv, dev_mismatched.tsv), test.tsv
    OUT/squad/train-v1.1.json, dev-v1.1.json, train-v2.0.json, dev-v2.0.json
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from pipeline.downstream.glue import FOLDERS
from pipeline.io.atomic import atomic_path

SUBJECTS = ["the cat", "a dog", "the teacher", "my friend", "the farmer", "a child", "the pilot", "her brother"]
VERBS = {"watched": "watch", "painted": "paint", "carried": "carry", "found": "find", "cleaned": "clean",
         "sold": "sell", "followed": "follow", "visited": "visit"}  # past tense -> base form
OBJECTS = ["the house", "a boat", "the river", "an old car", "the garden", "a small box", "the bridge", "a letter"]
GOOD = ["wonderful", "moving", "brilliant", "delightful", "charming", "superb"]
BAD = ["dull", "tedious", "awful", "boring", "clumsy", "dreadful"]
NOUNS = ["film", "story", "performance", "script", "movie", "ending"]
COUNTRIES = ["Zorvia", "Brenland", "Quelth", "Ostavia", "Marrow", "Tindal", "Vesper", "Caldor"]
CITIES = ["Melton", "Arbury", "Kesswick", "Dunmore", "Felbridge", "Harlow", "Penrith", "Selby"]
RIVERS = ["Kessa", "Orrin", "Tavy", "Lune", "Wyre", "Nidd", "Esk", "Ure"]
GOODS = ["copper", "wool", "salt", "tin", "cheese", "timber", "glass", "silk"]


def _parts(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(SUBJECTS), rng.choice(list(VERBS)), rng.choice(OBJECTS)


def _sentence(rng: random.Random) -> str:
    return " ".join(_parts(rng)) + " ."


def _other(rng: random.Random, s: str) -> str:
    """A sentence that differs from s: draw again until it does."""
    t = _sentence(rng)
    while t == s:
        t = _sentence(rng)
    return t


def _parse(s: str) -> str:
    return "( " + " ".join(f"( {w} )" for w in s.split()) + " )"


def _rows(task: str, rng: random.Random, n: int) -> list[tuple[list[str], str]]:
    """n (text fields, label) pairs of a task; text fields in the order the task's header wants them."""
    out = []
    for i in range(n):
        y = i % 2
        subj, verb, obj = _parts(rng)
        s = f"{subj} {verb} {obj} ."
        if task == "cola":  # grammatical vs the same words in a broken order
            w = s.split()
            out.append(([s if y else " ".join(w[2:-1] + w[:2]) + " ."], str(y)))
        elif task == "sst2":
            words = GOOD if y else BAD
            out.append(([f"a {rng.choice(words)} and {rng.choice(words)} {rng.choice(NOUNS)} "], str(y)))
        elif task in ("mrpc", "qqp", "wnli"):  # paraphrase = same sentence with a changed article
            a = s if task != "qqp" else f"why {s[:-2]} ?"
            b = a.replace("the ", "that ", 1) if y else (_other(rng, s) if task != "qqp" else f"why {_other(rng, s)[:-2]} ?")
            out.append(([a, b], str(y)))
        elif task == "stsb":
            b, keep = s.split(), rng.randint(0, 4)
            o = _other(rng, s).split()
            b = b[:keep] + o[keep:]
            score = 5.0 * sum(x == z for x, z in zip(s.split(), b)) / len(b)
            out.append(([s, " ".join(b)], f"{score:.3f}"))
        elif task == "mnli":
            k = i % 3
            h = [f"{subj} did not {VERBS[verb]} {obj} .", f"{subj} was there .", _other(rng, s)][k]
            out.append(([s, h], ["contradiction", "entailment", "neutral"][k]))
        elif task in ("qnli", "rte"):
            q = f"what did {subj} {VERBS[verb]} ?"
            other = _other(rng, s)
            text = [q, s if y == 0 else other] if task == "qnli" else [s, s if y == 0 else other]
            out.append((text, ["entailment", "not_entailment"][y]))
    return out


def _tsv(path: Path, header: list[str] | None, rows: list[list[str]], bom: bool = False) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    with atomic_path(path) as tmp:
        Path(tmp).write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def _glue_file(task: str, rows: list[tuple[list[str], str]], labeled: bool) -> tuple[list[str] | None, list[list[str]]]:
    """The official header and row layout of one task file."""
    body = []
    for i, (t, y) in enumerate(rows):
        if task == "cola":
            body.append(["gj04", y, "" if y == "1" else "*", t[0]] if labeled else [str(i), t[0]])
        elif task == "sst2":
            body.append([t[0], y] if labeled else [str(i), t[0]])
        elif task == "mrpc":
            body.append([y if labeled else str(i), str(1000 + 2 * i), str(1001 + 2 * i), t[0], t[1]])
        elif task == "stsb":
            body.append([str(i), "main-news", "2012test", "2012", str(i), "none", "none", t[0], t[1]] + ([y] if labeled else []))
        elif task == "qqp":
            body.append([str(i), str(2 * i + 1), str(2 * i + 2), t[0], t[1], y] if labeled else [str(i), t[0], t[1]])
        elif task == "mnli":
            lab = [y] * (5 if labeled == "dev" else 1) + [y] if labeled else []
            body.append([str(i), str(30000 + i), f"{30000 + i}e", "fiction", _parse(t[0]), _parse(t[1]),
                         "(ROOT " + _parse(t[0]) + ")", "(ROOT " + _parse(t[1]) + ")", t[0], t[1]] + lab)
        else:  # qnli, rte, wnli
            body.append([str(i), t[0], t[1]] + ([y] if labeled else []))
    headers = {
        "cola": None if labeled else ["index", "sentence"],
        "sst2": ["sentence", "label"] if labeled else ["index", "sentence"],
        "mrpc": ["Quality" if labeled else "index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
                + (["score"] if labeled else []),
        "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"] if labeled else ["id", "question1", "question2"],
        "mnli": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
                + ((["label1", "label2", "label3", "label4", "label5"] if labeled == "dev" else ["label1"]) + ["gold_label"]
                   if labeled else []),
        "qnli": ["index", "question", "sentence"] + (["label"] if labeled else []),
    }
    return headers.get(task, ["index", "sentence1", "sentence2"] + (["label"] if labeled else [])), body


def write_glue_task(task: str, out_dir: Path, n_train: int = 48, n_dev: int = 24, seed: int = 0) -> Path:
    rng = random.Random(f"{task}-{seed}")
    folder = Path(out_dir) / FOLDERS[task]
    evals = ["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"]
    tests = ["test_matched.tsv", "test_mismatched.tsv"] if task == "mnli" else ["test.tsv"]
    for name, n, labeled in [("train.tsv", n_train, "train")] + [(f, n_dev, "dev") for f in evals] \
            + [(f, n_dev, False) for f in tests]:
        header, body = _glue_file(task, _rows(task, rng, n), labeled)
        _tsv(folder / name, header, body, bom=task == "mrpc")
    return folder


def _paragraph(rng: random.Random, k: int, v2: bool) -> dict:
    country, city, river, good = (rng.choice(x) for x in (COUNTRIES, CITIES, RIVERS, GOODS))
    facts = [f"{country} is a small country in the north.", f"Its capital is {city}, an old market town.",
             f"The river {river} flows through {city} on its way to the sea.",
             f"For many centuries {country} has been known for its {good}.",
             "Most people there work on farms or in the mills near the hills."]
    context = " ".join(facts)
    qas = [(f"What is the capital of {country}?", city), (f"Which river flows through {city}?", river),
           (f"What is {country} known for?", good)]
    out = []
    for j, (question, answer) in enumerate(qas):
        start = context.index(answer)  # each answer word occurs first where the question points
        qa = {"id": f"q{k:03d}{j}", "question": question,
              "answers": [{"answer_start": start, "text": answer}] * (3 if k % 2 else 1)}
        if v2:
            qa["is_impossible"] = False
        out.append(qa)
    if v2:  # a question about a country the paragraph does not mention, with a plausible answer
        missing = next(c for c in COUNTRIES if c != country)
        out.append({"id": f"q{k:03d}x", "question": f"What is the capital of {missing}?", "answers": [],
                    "is_impossible": True, "plausible_answers": [{"answer_start": context.index(city), "text": city}]})
    return {"context": context, "qas": out}


def write_squad(out_dir: Path, version: str, n_train: int = 16, n_dev: int = 8, seed: int = 0) -> tuple[Path, Path]:
    v2 = version == "2.0"
    paths = []
    for split, n in (("train", n_train), ("dev", n_dev)):
        rng = random.Random(f"squad-{version}-{split}-{seed}")
        paras = [_paragraph(rng, k + (0 if split == "train" else 500), v2) for k in range(n)]
        doc = {"version": "v2.0" if v2 else "1.1",
               "data": [{"title": f"Article_{a}", "paragraphs": paras[a::4]} for a in range(min(4, n))]}
        path = Path(out_dir) / f"{split}-v{version}.json"
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(doc), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def write_all(out_dir: Path, n_train: int = 48, n_dev: int = 24, seed: int = 0) -> dict[str, Path]:
    """Every GLUE task folder and both SQuAD versions; returns the paths by task name."""
    out = {t: write_glue_task(t, Path(out_dir) / "glue", n_train, n_dev, seed) for t in FOLDERS}
    for v in ("1.1", "2.0"):
        out[f"squad{v}"] = write_squad(Path(out_dir) / "squad", v, max(4, n_train // 3), max(4, n_dev // 3), seed)[0]
    return out
