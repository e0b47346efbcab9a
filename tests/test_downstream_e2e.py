"""Every GLUE task and both SQuAD versions end to end on the fixtures, in both modes, through the real
commands: a tiny random text encoder and a stage-two run saved as `groundedbert train` saves it."""
import json
import math
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from pipeline.config import resolve
from pipeline.downstream.fixtures import FOLDERS, write_all
from pipeline.downstream.glue import TASKS
from pipeline.encoders import load_text_encoder
from pipeline.encoders.tiny import make_tiny_text_model
from pipeline.modules import StageTwoModules
from pipeline.training.checkpoint import BEST, checkpoint_dir, save
from stages import downstream

VARIANTS = ("baseline", "grounded", "random_fg")
# Small everything: 2 seeds (so std is real), few epochs, short inputs (SQuAD contexts still span windows).
# One thread: tiny matrices on a shared 2-core machine run 5-20x faster than on two.
FAST = [x for kv in ("probe_epochs=4", "finetune_epochs=1", "max_length=32", "squad_max_length=40", "stride=12",
                     "shard_size=16", "num_threads=1") for x in ("--set", f"downstream.{kv}")] + ["--seeds", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    name = make_tiny_text_model(root / "tiny-bert")
    config = resolve(overrides=[f"extract.text_model={name}", "train.d_g=8", "train.hidden=16"])
    torch.manual_seed(0)
    model = StageTwoModules(d_t=32, d_v=16, d_g=8, hidden=16)
    opt = torch.optim.AdamW(model.parameters())
    save(checkpoint_dir(root / "run") / BEST, model=model, optimizer=opt, generator=torch.Generator(), step=0,
         epoch=0, config=config, cache={}, best_val=0.0, bad_epochs=0)
    data = write_all(root / "fixtures", n_train=12, n_dev=6)
    app = typer.Typer()
    app.command("glue")(downstream.glue)
    app.command("squad")(downstream.squad)
    app.command("downstream")(downstream.suite)
    app.command("fixtures")(downstream.fixtures)
    return {"root": root, "run": root / "run", "data": data, "app": app, "model": name}


def _invoke(world, *args):
    result = CliRunner().invoke(world["app"], [str(a) for a in args])
    return result


def _whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


def _check_comparison(out: Path, expected_metrics: set[str], mode: str) -> dict:
    payload = json.loads((out / "comparison.json").read_text())
    assert payload["mode"] == mode and payload["seeds"] == [0, 1]
    assert set(payload["metrics"]) == expected_metrics
    assert list(payload["results"]) == list(VARIANTS)
    for name, row in payload["metrics"].items():
        for v in VARIANTS:
            values = row[v]["values"]
            assert len(values) == 2 and all(math.isfinite(x) for x in values)
            assert row[v]["mean"] == pytest.approx(sum(values) / 2)
            assert row[v]["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        assert row["delta"] == pytest.approx(row["grounded"]["mean"] - row["baseline"]["mean"])
        assert row["delta_vs_random"] == pytest.approx(row["grounded"]["mean"] - row["random_fg"]["mean"])
    table = (out / "comparison.md").read_text()
    assert "| metric | baseline | grounded | random_fg | Δ grounded − baseline | Δ grounded − random_fg |" in table
    assert json.loads((out / "downstream_config.json").read_text())["downstream"]["probe_epochs"] == 4
    return payload


@pytest.mark.parametrize("mode", ["probe", "finetune"])
@pytest.mark.parametrize("task", list(TASKS))
def test_glue_task_end_to_end(world, task, mode):
    out = world["root"] / "out" / mode / task
    r = _invoke(world, "glue", "--task", task, "--data", world["data"][task], "--run", world["run"], "--out", out,
                "--mode", mode, "--cache", world["root"] / "cache", *FAST)
    assert r.exit_code == 0, r.output
    spec = TASKS[task]
    evals = [Path(f).stem for f in spec.eval_files]
    payload = _check_comparison(out, {f"{e}/{m}" for e in evals for m in spec.metrics}, mode)
    assert payload["examples"]["train"] == 12 and payload["text_model"] == world["model"]
    for name, row in payload["metrics"].items():
        split, metric = name.split("/")
        if metric == "accuracy":   # scored over the whole eval file: a count of right answers over its size
            assert all(_whole(x * payload["examples"][split]) for v in VARIANTS for x in row[v]["values"]), row
    if mode == "probe":  # the task's states went through the stage-one cache
        assert list((world["root"] / "cache" / spec.name).glob("train-*/manifest.json"))


@pytest.mark.parametrize("mode", ["probe", "finetune"])
@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_squad_end_to_end(world, version, mode):
    out = world["root"] / "out" / mode / f"squad{version}"
    r = _invoke(world, "squad", "--data", world["data"][f"squad{version}"], "--run", world["run"], "--out", out,
                "--mode", mode, "--cache", world["root"] / "cache", *FAST)
    assert r.exit_code == 0, r.output
    expected = {"exact", "f1", "total"}
    if version == "2.0":
        expected |= {f"{s}_{m}" for s in ("HasAns", "NoAns") for m in ("exact", "f1", "total")}
    payload = _check_comparison(out, expected, mode)
    assert payload["task"] == f"squad{version}"
    assert payload["examples"]["dev_windows"] > payload["examples"]["dev_questions"]  # contexts span windows
    # EM is a percentage of the questions, each right or wrong; the totals are the fixture's questions.
    total = payload["metrics"]["total"]["baseline"]["values"][0]
    assert total == payload["examples"]["dev_questions"]
    assert all(_whole(x * total / 100) for v in VARIANTS for x in payload["metrics"]["exact"][v]["values"])


def test_probe_reuses_the_cache_and_repeats_exactly(world):
    args = ["glue", "--task", "sst2", "--data", world["data"]["sst2"], "--run", world["run"],
            "--cache", world["root"] / "cache-reuse", *FAST]
    assert _invoke(world, *args, "--out", world["root"] / "a").exit_code == 0
    manifests = sorted((world["root"] / "cache-reuse").rglob("manifest.json"))
    stamps = [p.stat().st_mtime_ns for p in manifests]
    r = _invoke(world, *args, "--out", world["root"] / "b", "--pooling", "cls")
    assert r.exit_code == 0, r.output
    assert [p.stat().st_mtime_ns for p in manifests] == stamps and len(manifests) == 2  # train + dev, not rebuilt
    # A plan written by another version of the extraction code: the folder is rebuilt, not an error.
    plan = manifests[0].with_name("plan.json")
    stale = json.loads(plan.read_text())
    stale["fingerprint"]["split"]["items_sha256"] = "0" * 64
    plan.write_text(json.dumps(stale))
    assert _invoke(world, *args, "--out", world["root"] / "c").exit_code == 0
    assert json.loads(plan.read_text())["fingerprint"]["split"]["items_sha256"] != "0" * 64
    a, c = (json.loads((world["root"] / x / "comparison.json").read_text())["metrics"] for x in ("a", "c"))
    assert a == c  # same seeds, same inputs: the same numbers


def test_tuned_f_g_trains_a_copy(world):
    """With tune_fg the grounded probe trains f_g, on a copy: the run's module is left as loaded."""
    from pipeline.downstream.tasks import evaluate_glue

    cfg = resolve(overrides=["downstream.probe_epochs=2", "downstream.tune_fg=true", "downstream.max_length=32"])["downstream"]
    f_g = StageTwoModules(d_t=32, d_v=16, d_g=8, hidden=16).f_g
    before = {k: v.clone() for k, v in f_g.state_dict().items()}
    enc = load_text_encoder(world["model"], max_length=32)
    payload = evaluate_glue("rte", world["data"]["rte"], encoder=enc, grounding=f_g, cfg=cfg, mode="probe", seeds=1,
                            cache_root=world["root"] / "cache")
    assert payload["tune_fg"] is True
    assert all(torch.equal(before[k], v) for k, v in f_g.state_dict().items())


def test_bad_data_exits_2_naming_file_and_line(world, tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    r = _invoke(world, "glue", "--task", "sst2", "--data", folder, "--run", world["run"], "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert f"file {folder / 'train.tsv'}, item line 3: label '2' not in the sst2 label set" in r.output
    r = _invoke(world, "squad", "--data", tmp_path / "train-v1.1.json", "--run", world["run"], "--out", tmp_path / "o")
    assert r.exit_code == 2 and "none found beside the train file" in r.output


@pytest.mark.parametrize("mode, jobs", [("probe", "1"), ("probe", "2"), ("finetune", "0")])
def test_the_suite_gives_each_task_what_its_own_command_gives(world, mode, jobs, tmp_path):
    """`evaluate downstream` reports the tasks in the order asked, one after another or side by side in worker
    processes; each task's numbers are those of its own command, finetune mode included (it trains the encoder and
    f_g, which the suite loads afresh per task)."""
    common = ["--run", world["run"], "--mode", mode, "--cache", tmp_path / "cache", *FAST]
    r = _invoke(world, "downstream", "--data", world["root"] / "fixtures", "--tasks", "rte,squad2.0,cola",
                "--out", tmp_path / "suite", "--jobs", jobs, *common)
    assert r.exit_code == 0, r.output
    assert [line for line in r.output.splitlines() if line.startswith("== ")] == ["== rte", "== squad2.0", "== cola"]
    assert r.output.count("baseline: the head on h alone") == 3   # each task's report, under its own heading
    assert sorted(p.name for p in (tmp_path / "suite").iterdir()) == ["cola", "rte", "squad2.0"]
    for task in ("rte", "squad2.0", "cola"):
        own = (["squad", "--data", world["data"][task]] if task.startswith("squad")
               else ["glue", "--task", task, "--data", world["data"][task]])
        assert _invoke(world, *own, "--out", tmp_path / "own" / task, *common).exit_code == 0
        suite, alone = (json.loads((tmp_path / d / task / "comparison.json").read_text()) for d in ("suite", "own"))
        assert suite["metrics"] == alone["metrics"] and suite["task"] == alone["task"]
        assert (tmp_path / "suite" / task / "downstream_config.json").read_text() == \
            (tmp_path / "own" / task / "downstream_config.json").read_text()


def test_the_suite_names_an_unknown_task_or_a_missing_input_before_running_any(world, tmp_path):
    args = ["--run", world["run"], "--out", tmp_path / "o", *FAST]
    r = _invoke(world, "downstream", "--data", world["root"] / "fixtures", "--tasks", "cola,imagenet", *args)
    assert r.exit_code == 2 and "--tasks names ['imagenet']" in r.output and "squad2.0" in r.output
    partial = tmp_path / "partial"
    (partial / "glue").mkdir(parents=True)
    r = _invoke(world, "downstream", "--data", partial, "--tasks", "rte,squad1.1", *args)
    assert r.exit_code == 2
    assert f"file {partial}" in r.output and str(partial / "glue" / "RTE") in r.output
    assert str(partial / "squad" / "train-v1.1.json") in r.output
    assert not (tmp_path / "o").exists()   # nothing ran


def test_a_bad_item_side_by_side_stops_the_suite_with_that_tasks_error(world, tmp_path):
    """A user error in a worker comes back as the one-line error its own command gives (exit 2), after the reports
    of the tasks asked for before it; the tasks after it are not reported."""
    data = tmp_path / "fixtures"
    write_all(data, n_train=12, n_dev=6)
    bad = data / "glue" / FOLDERS["rte"] / "train.tsv"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:2] + [lines[2].rsplit("\t", 1)[0] + "\tmaybe"] + lines[3:]) + "\n")
    r = _invoke(world, "downstream", "--data", data, "--tasks", "cola,rte,sst2", "--jobs", "2", "--run", world["run"],
                "--out", tmp_path / "o", "--cache", tmp_path / "cache", *FAST)
    assert r.exit_code == 2, r.output
    assert [line for line in r.output.splitlines() if line.startswith("== ")] == ["== cola", "== rte"]
    assert f"error: file {bad}, item line 3: label 'maybe' not in the rte label set" in r.output
    assert (tmp_path / "o" / "cola" / "comparison.json").is_file()


def test_fixtures_command_writes_every_task(world, tmp_path):
    r = _invoke(world, "fixtures", tmp_path, "--train", "6", "--dev", "3")
    assert r.exit_code == 0, r.output
    for folder in FOLDERS.values():
        assert (tmp_path / "glue" / folder / "train.tsv").is_file()
    assert sorted(p.name for p in (tmp_path / "squad").iterdir()) == [
        "dev-v1.1.json", "dev-v2.0.json", "train-v1.1.json", "train-v2.0.json"]
