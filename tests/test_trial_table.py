"""experiments/trial.py: rows from `dvc exp show --json`, ranked on validation, intervals over seeds, curves."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_trial():
    spec = importlib.util.spec_from_file_location("trial", ROOT / "experiments" / "trial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metrics(word: float, prior: float = 0.25) -> dict:
    part = {"accuracy": word, "chance": 0.07, "trials": 100}
    return {"pointing": {"plan": {"word": {"all": part, "multi_shape": part}}},
            "headline": {"margin_over_object_prior_all": word - prior, "object_prior_multi": prior},
            "baselines": {"object_prior": {"all": {"accuracy": prior}}, "largest_shape": {"all": {"accuracy": 0.2}},
                          "any_word": {"all": {"accuracy": 0.5}}},
            "mass": {"named": 0.7, "unnamed": 0.1, "background": 0.2},
            "retrieval": {"t2i": {"R@1": 0.1}},
            "synonyms": {s: {"held_out": {"precision_at_1": 0.5}} for s in ("g", "h", "random_fg")}}


def shown(rows: dict[str, list[tuple[float, float]]], state: str = "success") -> list:
    trial = load_trial()
    exps = []
    for name, seeds in rows.items():
        for seed, (val, test) in enumerate(seeds):
            data = {trial.VAL: {"data": metrics(val)}, trial.TEST: {"data": metrics(test)}}
            exps.append({"executor": {"state": state}, "revs": [{"name": f"{name}-s{seed}",
                                                                  "data": {"metrics": data}}]})
    return [{"experiments": exps}]


def test_rows_are_ranked_on_validation_not_on_test():
    trial = load_trial()
    # `a` is better on test, `b` on validation: the table must follow validation.
    rows = trial.experiments(shown({"a": [(0.5, 0.9)] * 3, "b": [(0.6, 0.1)] * 3}))
    assert trial.ranked(rows) == ["b", "a"]
    text = trial.table(rows)
    assert text.index("`b`") < text.index("`a`")


def test_seed_interval_is_a_student_t_interval():
    trial = load_trial()
    mean, half = trial.t_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(trial.t_interval([0.4])[1])


def test_unfinished_experiments_are_left_out():
    trial = load_trial()
    assert trial.experiments(shown({"a": [(0.5, 0.5)]}, state="running")) == {}


def test_curves_write_one_csv_row_per_seed_and_point(tmp_path):
    trial = load_trial()
    rows = trial.experiments(shown({"default": [(0.6, 0.6)] * 3, "default-dg64": [(0.5, 0.5)] * 3,
                                    "default-dg256": [(0.7, 0.7)] * 3, "default-n200": [(0.3, 0.3)] * 3,
                                    "default-n400": [(0.4, 0.4)] * 3, "other-n200": [(0.9, 0.9)] * 2}))
    written = trial.curves(rows, "default", str(tmp_path))
    lines = (tmp_path / "curve_data.csv").read_text().splitlines()
    assert lines[0].startswith("x,seed,")
    assert len(lines) == 1 + 3 * 3
    assert [line.split(",")[0] for line in lines[1:]] == ["200"] * 3 + ["400"] * 3 + ["800"] * 3
    assert all(Path(p).stat().st_size > 0 for p in written)


def test_the_grid_has_every_cell_and_the_balanced_row():
    trial = load_trial()
    cells = [name for name in trial.GRID if name.startswith(("ms-", "pot-"))]
    assert len(cells) == 2 * 4 * 2
    assert trial.GRID["ms-s1.0-k1"] == ["train.local_score=maxsim", "train.mass=1.0", "train.patch_capacity=1.0",
                                        "train.lambda_ot=0.1"]
    assert {"lambda0", "paper-objective", "matching-only"} <= set(trial.GRID)
    # The partial-OT score's rows keep the 8 negatives they ran with, whatever params.yaml's default is.
    assert "train.local_negatives=8" in trial.GRID["pot-s1.0-k1"]
    assert not any(o.startswith("train.local_negatives") for o in trial.GRID["ms-s1.0-k1"])


def test_a_saved_grid_reads_back_to_the_same_table(tmp_path):
    trial = load_trial()
    rows = trial.experiments(shown({"a": [(0.5, 0.9), (0.6, 0.8), (0.55, 0.7)], "b": [(0.6, 0.1)] * 3}))
    trial.save(rows, str(tmp_path / "runs.json"), "abc1234")
    saved = json.loads((tmp_path / "runs.json").read_text())
    assert saved["rev"] == "abc1234"
    assert trial.table(trial.load(saved)) == trial.table(rows)
    assert trial.table(trial.load(saved), short=True) == trial.table(rows, short=True)


def test_slim_keeps_what_the_table_reads_and_drops_the_breakdowns():
    trial = load_trial()
    full = metrics(0.7)
    full["pointing"]["plan"]["token"] = {"all": {"accuracy": 0.1}}
    kept = trial.slim(full)
    assert kept["pointing"]["plan"] == {"word": full["pointing"]["plan"]["word"]}
    assert kept["headline"] == full["headline"]


def test_rows_on_other_data_are_listed_apart_and_not_ranked_with_the_grid():
    trial = load_trial()
    other = f"a-{next(iter(trial.OTHER_DATA))}"
    rows = trial.experiments(shown({"a": [(0.5, 0.5)] * 3, other: [(0.9, 0.9)] * 3}))
    text = trial.table(rows)
    grid_part, other_part = text.split("On other data")
    assert f"`{other}`" not in grid_part and f"`{other}`" in other_part
    assert trial.ranked({k: v for k, v in rows.items() if k != other}) == ["a"]


def test_a_paired_comparison_subtracts_seed_by_seed():
    trial = load_trial()
    # b is a - 0.02 at every seed, with a large spread across seeds: unpaired intervals overlap, paired ones do not.
    a = [(0.5, 0.5), (0.7, 0.7), (0.9, 0.9)]
    b = [(v - 0.02, t - 0.02) for v, t in a]
    rows = trial.experiments(shown({"a": a, "b": b}))
    text = trial.compare(rows, "a", "b")
    assert "+0.020 ± 0.000" in text and "a is better" in text
    tie = trial.experiments(shown({"a": a, "c": [(0.52, 0.5), (0.68, 0.7), (0.9, 0.9)]}))
    assert "a tie" in trial.compare(tie, "a", "c")


def test_points_run_around_a_row_carry_its_overrides_then_their_own():
    trial = load_trial()
    rows = trial.around("ms-s0.5-k16", trial.LARGE)
    assert rows["ms-s0.5-k16-large-n800"] == trial.GRID["ms-s0.5-k16"] + ["data.images=4000", "train.train_images=800"]
    assert trial.apart("ms-s0.5-k16-large-n800") == "large" and trial.apart("lambda0-data1") == "other-data"
    assert trial.apart("lambda0-dg64") is None and trial.apart("lambda0") is None


def test_merging_a_record_adds_rows_and_replaces_a_seed_run_again():
    trial = load_trial()
    kept = trial.experiments(shown({"a": [(0.5, 0.5), (0.6, 0.6)], "b": [(0.1, 0.1)]}))
    new = trial.experiments(shown({"a": [(0.9, 0.9)], "c": [(0.3, 0.3)]}))   # a's seed 0 again, and a new row
    merged = trial.merge(kept, new)
    assert sorted(merged) == ["a", "b", "c"]
    assert [r["seed"] for r in merged["a"]] == [0, 1]
    assert trial.dig(merged["a"][0][trial.VAL], trial.HEAD + ("multi_shape", "accuracy")) == 0.9


def test_queued_runs_take_one_thread_each_because_the_queue_runs_two_at_once(monkeypatch):
    trial = load_trial()
    commands = []
    monkeypatch.setattr(trial.subprocess, "run", lambda command, check: commands.append(command))
    trial.queue({"row": ["train.mass=0.5"]}, seeds=2, first_seed=3)
    assert [c[c.index("-n") + 1] for c in commands] == ["row-s3", "row-s4"]
    for command in commands:
        overrides = [command[i + 1] for i, word in enumerate(command) if word == "-S"]
        assert "train.num_threads=1" in overrides and "train.mass=0.5" in overrides
        assert overrides.index("train.num_threads=1") < overrides.index("train.mass=0.5")  # a row may still override it
