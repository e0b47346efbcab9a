"""GLUE loaders: every task's official layout (from the fixtures), and malformed files named by file and line."""
from pathlib import Path

import pytest

from pipeline.downstream.fixtures import FOLDERS, write_glue_task
from pipeline.downstream.glue import TASKS, get_task, load_file, load_task
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    for task in FOLDERS:
        write_glue_task(task, root, n_train=12, n_dev=6)
    return root


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_loads_train_dev_and_test(task, glue_dir):
    spec, train, evals = load_task(task, glue_dir / FOLDERS[task])
    assert len(train) == 12 and set(evals) == {Path(f).stem for f in spec.eval_files}
    for examples in (train, *evals.values()):
        for e in examples:
            assert e.text_a.strip() and (e.text_b is None) == (spec.text_b is None)
            if spec.is_regression:
                assert isinstance(e.label, float) and 0 <= e.label <= 5
            else:
                assert e.label in range(spec.num_outputs)
    if not spec.is_regression:  # the fixtures use every label of the task
        assert {e.label for e in train} == set(range(spec.num_outputs))
    test_name = "test_matched.tsv" if task == "mnli" else "test.tsv"
    test = load_file(spec, glue_dir / FOLDERS[task] / test_name, labeled=False)
    assert len(test) == 6 and all(e.label is None for e in test)


def test_layout_details(glue_dir):
    """CoLA has no header (row 1 is data); MRPC starts with a byte-order mark; MNLI has two dev sets."""
    _, cola, _ = load_task("CoLA", glue_dir / "CoLA")
    first = (glue_dir / "CoLA" / "train.tsv").read_text().split("\n")[0].split("\t")
    assert cola[0].text_a == first[3] and cola[0].label == int(first[1]) and cola[0].guid == "train-1"
    assert (glue_dir / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    _, _, evals = load_task("mnli", glue_dir / "MNLI")
    assert list(evals) == ["dev_matched", "dev_mismatched"]
    assert get_task("STS-B").name == "stsb" and get_task("SST-2").name == "sst2"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("task,text,reason", [
    ("sst2", "sentence\tlabel\ngood film\t1\nbad film\n", "expected 2 tab-separated fields, found 1"),
    ("sst2", "sentence\tlabel\ngood film\t1\nbad film\tnegative\n", "label 'negative' not in the sst2 label set"),
    ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tg\tf\ty\t0\ts\ts\ta b\tc d\t1.0\n1\tg\tf\ty\t1\ts\ts\ta b\tc d\thigh\n", "score 'high' is not a number"),
    ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tg\tf\ty\t0\ts\ts\ta b\tc d\t1.0\n1\tg\tf\ty\t1\ts\ts\ta b\tc d\t7.5\n", "score 7.5 outside [0, 5]"),
    ("rte", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\t \tentailment\n", "empty sentence"),
    ("cola", "gj04\t1\t\tA fine sentence.\ngj04\t0\t*\tSentence fine a.\ngj04\t1\tA broken row\n", "expected 4 tab-separated fields, found 3"),
])
def test_malformed_row_names_file_and_line(tmp_path, task, text, reason):
    path = _write(tmp_path / "train.tsv", text)
    with pytest.raises(DataError) as e:
        load_file(get_task(task), path)
    assert f"file {path}" in str(e.value) and "line 3" in str(e.value) and reason in str(e.value)


def test_header_without_the_columns(tmp_path):
    path = _write(tmp_path / "train.tsv", "index\tquestion\tpassage\tlabel\n0\tq\tp\tentailment\n")
    with pytest.raises(DataError, match=r"line 1: header lacks the qnli column\(s\) \['sentence'\]"):
        load_file(get_task("qnli"), path)


def test_missing_file_empty_file_unknown_task(tmp_path):
    with pytest.raises(DataError, match="the mnli folder has no dev_matched.tsv"):
        _write(tmp_path / "train.tsv", "x\n")
        load_task("mnli", tmp_path)
    with pytest.raises(DataError, match="empty file"):
        load_file(get_task("sst2"), _write(tmp_path / "empty.tsv", ""))
    with pytest.raises(DataError, match="unknown GLUE task 'squad'"):
        get_task("squad")


def test_skip_policy_leaves_out_bad_rows(tmp_path):
    path = _write(tmp_path / "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                  "0\t1\t2\twhy a\twhy b\t0\n1\t3\t4\twhy c\n2\t5\t6\twhy d\twhy e\t1\n")
    rows = load_file(get_task("qqp"), path, on_error="skip")
    assert [e.guid for e in rows] == ["train-2", "train-4"]
    with pytest.raises(DataError, match="line 3"):
        load_file(get_task("qqp"), path)
