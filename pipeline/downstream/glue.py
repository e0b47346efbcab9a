"""Loaders for the official GLUE TSV files, one `TaskSpec` per task.

Each task folder holds `train.tsv`, `dev.tsv` (MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`) and an
unlabelled `test.tsv`. The files are tab-separated with no quoting (sentences contain bare `"`), so
rows are split on tabs exactly, as the GLUE baselines read them. Columns are found by name in the
header where the file has one; CoLA's labelled files have none and are read by position.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadItems, DataError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_a: str                 # header name of the first sentence (CoLA: a column index, as text)
    text_b: str | None          # header name of the second sentence; None for single-sentence tasks
    label: str                  # header name of the label column
    labels: tuple[str, ...] | None  # the label set in index order; None = regression (STS-B)
    metrics: tuple[str, ...]
    eval_files: tuple[str, ...] = ("dev.tsv",)
    header: bool = True

    @property
    def num_outputs(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    # CoLA's labelled files: source, label, original label ('*' or empty), sentence; no header.
    TaskSpec("cola", "3", None, "1", ("0", "1"), ("matthews",), header=False),
    TaskSpec("sst2", "sentence", None, "label", ("0", "1"), ("accuracy",)),
    TaskSpec("mrpc", "#1 String", "#2 String", "Quality", ("0", "1"), ("accuracy", "f1")),
    TaskSpec("stsb", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    TaskSpec("qqp", "question1", "question2", "is_duplicate", ("0", "1"), ("accuracy", "f1")),
    TaskSpec("mnli", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
             ("accuracy",), eval_files=("dev_matched.tsv", "dev_mismatched.tsv")),
    TaskSpec("qnli", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",)),
    TaskSpec("rte", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",)),
    TaskSpec("wnli", "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",)),
)}
# Each task's folder name in GLUE's official download (the fixtures use them too).
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
           "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
assert list(FOLDERS) == list(TASKS)
# The names GLUE's own folders use, so `--task SST-2` or `--task STS-B` works as well as `sst2`.
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise DataError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[key]


@dataclass(frozen=True)
class GlueExample:
    guid: str                   # "<file stem>-<line number>": unique, and points back at the row
    text_a: str
    text_b: str | None
    label: int | float | None   # class index, or the score for STS-B; None in unlabelled test files


def task_file(spec: TaskSpec, data_dir: Path, filename: str) -> Path:
    path = Path(data_dir) / filename
    if not path.is_file():
        raise DataError(f"the {spec.name} folder has no {filename} (a GLUE task folder holds "
                        f"train.tsv and {', '.join(spec.eval_files)})", file=str(path))
    return path


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        # utf-8-sig: MRPC's files start with a byte-order mark before "Quality".
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(path)) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(i + 1, line.rstrip("\r").split("\t")) for i, line in enumerate(lines)]


def _label(spec: TaskSpec, raw: str, path: Path, line: int):
    if spec.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"score {raw!r} is not a number", file=str(path), item=f"line {line}") from None
        if not 0.0 <= value <= 5.0:
            raise DataError(f"score {value} outside [0, 5]", file=str(path), item=f"line {line}")
        return value
    if raw not in spec.labels:
        raise DataError(f"label {raw!r} not in the {spec.name} label set {list(spec.labels)}",
                        file=str(path), item=f"line {line}")
    return spec.labels.index(raw)


def load_file(spec: TaskSpec, path: Path, *, labeled: bool = True, on_error: str = "fail") -> list[GlueExample]:
    """Read one GLUE TSV. `labeled=False` reads a test file (index + sentences, always with a header).

    A malformed row raises `DataError` naming `file:line`; with `on_error="skip"` it is left out
    (the real QQP and MNLI train files each hold a handful of broken rows)."""
    path = Path(path)
    bad = BadItems(on_error)
    rows = _read_rows(path)
    if not rows:
        raise DataError("empty file", file=str(path))
    has_header = spec.header or not labeled
    if has_header:
        header = rows[0][1]
        cols = {name: i for i, name in enumerate(header)}
        wanted = [spec.text_a, spec.text_b] + ([spec.label] if labeled else [])
        if spec.name == "cola":  # CoLA's test file is the only CoLA file with a header: index, sentence
            wanted, cols["3"] = [], cols.get("sentence", -1)
        missing = [w for w in wanted if w is not None and w not in cols]
        if missing or cols.get(spec.text_a, -1) < 0:
            raise DataError(f"header lacks the {spec.name} column(s) {missing or [spec.text_a]}; found {header}",
                            file=str(path), item="line 1")
        width, body = len(header), rows[1:]
    else:
        cols = {str(i): i for i in range(4)}
        width, body = 4, rows
    examples = []
    for line, fields in body:
        try:
            if len(fields) != width:
                raise DataError(f"expected {width} tab-separated fields, found {len(fields)}",
                                file=str(path), item=f"line {line}")
            a = fields[cols[spec.text_a]]
            b = fields[cols[spec.text_b]] if spec.text_b is not None else None
            if not a.strip() or (b is not None and not b.strip()):
                raise DataError("empty sentence", file=str(path), item=f"line {line}")
            label = _label(spec, fields[cols[spec.label]], path, line) if labeled else None
        except DataError as e:
            bad.handle(e)
            continue
        examples.append(GlueExample(f"{path.stem}-{line}", a, b, label))
    if not examples:
        raise DataError("no usable rows", file=str(path))
    return examples


def load_task(name: str, data_dir: Path, on_error: str = "fail") -> tuple[TaskSpec, list[GlueExample], dict[str, list[GlueExample]]]:
    """The train examples and each labelled evaluation set (MNLI: matched and mismatched) of a task folder."""
    spec = get_task(name)
    paths = [task_file(spec, data_dir, f) for f in ("train.tsv", *spec.eval_files)]  # all missing ones fail first
    train = load_file(spec, paths[0], on_error=on_error)
    evals = {p.stem: load_file(spec, p, on_error=on_error) for p in paths[1:]}
    return spec, train, evals
