"""The partial-alignment trial: every row of the grid, queued as `dvc exp` runs on the one cache, and its table.

    python experiments/trial.py queue grid            # the 19 rows x seeds of the grid (local score x s x kappa, ...)
    python experiments/trial.py queue curves          # d_g and data size, around the chosen default (--around ROW)
    dvc queue start --jobs 2 && dvc queue status      # until every experiment is Success
    python experiments/trial.py queue other-data      # the default on a second synthesis of the data (data.seed=1)
    python experiments/trial.py queue large           # the data-size curve to 3 200 images, on data.images=4000
    python experiments/trial.py table --rev COMMIT --save docs/trial_runs.json   # `dvc exp show --json` of the
                                                      # queue's base commit; --save keeps every run's read-out in git
    python experiments/trial.py table --rev COMMIT --merge docs/trial_runs.json --save docs/trial_runs.json
                                                      # runs queued from a later commit, added to the record
    python experiments/trial.py table docs/trial_runs.json       # the same table from the saved file
    python experiments/trial.py compare lambda0 ms-s0.5-k16 docs/trial_runs.json   # paired by seed, on validation
    python experiments/trial.py curves docs/trial_runs.json      # docs/figures/curve_*.{csv,png} (--default ROW)

The protocol (docs/method.md, "The trial"): every row trains with seeds 0..SEEDS-1 on the same cache and is
scored by the same two `evaluate` stages, on validation (runs/default/metrics_val.json) and on test
(runs/default/metrics.json). Rows are chosen and compared on validation; test is read once per row, for the
table. Intervals over seeds are 95 % Student t intervals of the mean; the per-run 95 % bootstrap intervals over
test images are in each run's metrics.json.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
from collections import defaultdict

SEEDS = 3
# Every row of the trial trains this many epochs, the default included, so that the grid fits one sitting on
# 2 cores (params.yaml's own default, 6, was chosen on validation; docs/method.md says what 4 costs).
TRIAL_EPOCHS = 4
TEST, VAL = "runs/default/metrics.json", "runs/default/metrics_val.json"

# Row name -> the `-S key=value` overrides that make it; everything else is params.yaml.
# maxsim / partial_ot: the local (token-wise contrastive) score; s: train.mass; k: train.patch_capacity.
# The balanced-OT rows are s = 1, kappa = 1: every token and every patch must send or take all its mass.
# Every local-score x s x kappa cell trains with the partial-OT loss at the weight the trial ran it with (pinned,
# as params.yaml's default became lambda = 0 after the trial: docs/method.md).
OT_LOSS = 0.1
# The partial-OT score's rows ran with 8 hard negatives a caption, params.yaml's default until the score's cost was
# measured (bench/RESULTS.md); pinned for the same reason.
POT_NEGATIVES = 8
GRID: dict[str, list[str]] = {}
for score, tag in (("maxsim", "ms"), ("partial_ot", "pot")):
    for s in ("0.25", "0.5", "0.75", "1.0"):
        for k in ("1.0", "16.0"):
            # partial_ot: pinned to the negatives the trial scored each caption against (params.yaml's: 2)
            pot = [f"train.local_negatives={POT_NEGATIVES}"] if score == "partial_ot" else []
            GRID[f"{tag}-s{s}-k{int(float(k))}"] = [f"train.local_score={score}", f"train.mass={s}",
                                                  f"train.patch_capacity={k}", f"train.lambda_ot={OT_LOSS}", *pot]
GRID.update({
    "lambda0": ["train.lambda_ot=0"],                                        # no OT loss; the local term stays
    # The paper summary's objective (docs/method.md): matching + lambda * partial OT at s = 0.5 with uniform
    # marginals, lambda = 1, and nothing of ours (no hinge, no token-wise term).
    "paper-objective": ["train.lambda_ot=1.0", "train.mass=0.5", "train.patch_capacity=1.0",
                        "train.ot_hinge_weight=0", "train.local_contrastive_weight=0"],
    "matching-only": ["train.lambda_ot=0", "train.local_contrastive_weight=0"],
})
# The order the queue runs them in: the rows that answer the questions first, so that a sitting cut
# short still has whole rows (every seed) of what matters most.
PRIORITY = ["ms-s0.5-k16", "lambda0", "matching-only", "paper-objective", "pot-s0.5-k16", "ms-s1.0-k1",
            "pot-s1.0-k1", "ms-s1.0-k16", "pot-s1.0-k16", "ms-s0.25-k16", "pot-s0.25-k16", "ms-s0.75-k16",
            "pot-s0.75-k16", "ms-s0.5-k1", "pot-s0.5-k1", "ms-s0.25-k1", "pot-s0.25-k1", "ms-s0.75-k1", "pot-s0.75-k1"]
assert sorted(PRIORITY) == sorted(GRID)

# The grid row params.yaml's default is (the trial chose it on validation: docs/method.md). The curves, the
# second synthesis and the larger synthesis are run around a row (`--around`, this one unless told), named
# f"{row}-{point}" and trained with the row's own overrides plus the point's, so that they do not depend on
# what params.yaml holds when they run. The row's own runs give the d_g = 128 and all-images points.
DEFAULT_ROW = "lambda0"
# The seed summary's two curves: d_g and data size.
CURVES: dict[str, list[str]] = {
    "dg64": ["train.d_g=64"], "dg256": ["train.d_g=256"],
    "n200": ["train.train_images=200"], "n400": ["train.train_images=400"],
}
# The row on a second synthesis of the scenes data (another data.seed: other images, captions and splits), as the
# issue's "trained on data synthesised with a seed of our own choosing". Its own cache, so it is reported beside
# the grid, never ranked in it.
OTHER_DATA_SEED = 1
OTHER_DATA: dict[str, list[str]] = {f"data{OTHER_DATA_SEED}": [f"data.seed={OTHER_DATA_SEED}"]}
# The data-size curve to 3 200 training images needs a larger synthesis than the default's 800: the row on
# data.images = 4 000 (3 200 / 400 / 400), every size a nested subset of that one cache's training split, so that
# the whole curve shares its validation and test images. Apart from the grid for the same reason as above.
LARGE_IMAGES = 4000
LARGE_SIZES = (200, 400, 800, 1600, 3200)
LARGE: dict[str, list[str]] = {f"large-n{n}": [f"data.images={LARGE_IMAGES}", f"train.train_images={n}"]
                               for n in LARGE_SIZES}
PARTS = {"curves": CURVES, "other-data": OTHER_DATA, "large": LARGE}


def around(row: str, points: dict[str, list[str]]) -> dict[str, list[str]]:
    """The points as rows of their own around a grid row: f"{row}-{point}" -> the row's overrides, then the point's."""
    return {f"{row}-{point}": GRID[row] + overrides for point, overrides in points.items()}


def point_of(name: str, part: str) -> str | None:
    """The point of PARTS[part] a row was run at (lambda0-large-n800 -> large-n800), or None."""
    return next((point for point in PARTS[part] if name.endswith(f"-{point}")), None)


def apart(name: str) -> str | None:
    """Which group of rows on other data a row belongs to ("other-data" / "large"), or None for the grid's cache."""
    return next((part for part in ("other-data", "large") if point_of(name, part)), None)


# (column, metrics path). The headline is per-word pointing of the plan at the evaluation's OT setting
# (evaluate.mass, evaluate.epsilon, evaluate.patch_capacity), chosen on validation and the same for every row.
HEAD = ("pointing", "plan", "word")
COLUMNS = [
    ("val: word, multi-shape", VAL, HEAD + ("multi_shape", "accuracy")),
    ("test: word, all", TEST, HEAD + ("all", "accuracy")),
    ("test: word, multi-shape", TEST, HEAD + ("multi_shape", "accuracy")),
    ("margin over object prior", TEST, ("headline", "margin_over_object_prior_all")),
    ("any-word map", TEST, ("baselines", "any_word", "all", "accuracy")),
    ("word over any-word map", TEST, None),
    ("mass on named / unnamed / background", TEST, None),
    ("t→i R@1", TEST, ("retrieval", "t2i", "R@1")),
    ("held-out synonyms P@1: g / h / untrained", TEST, None),
]
MASS = ("mass",)
ANY_WORD = ("baselines", "any_word", "all", "accuracy")


def experiments(shown: list) -> dict[str, list[dict]]:
    """{row: [{TEST: metrics, VAL: metrics} per finished seed]} from `dvc exp show --json`."""
    rows = defaultdict(list)
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue   # a queued or running experiment shows its baseline's metrics until it finishes
            for rev in exp.get("revs", []):
                name = rev.get("name") or exp.get("name") or ""
                match = re.fullmatch(r"(.+)-s(\d+)", name)
                metrics = (rev.get("data") or {}).get("metrics", {})
                files = {path: (metrics.get(path) or {}).get("data") for path in (TEST, VAL)}
                if match and all(files.values()):
                    rows[match.group(1)].append({**files, "seed": int(match.group(2))})
    return rows


# What `--save` keeps of each run's two metrics files: every field the table, the curves and docs/method.md read
# (the per-class, per-phrase and per-token breakdowns stay in the runs). Experiments live in one machine's git
# refs and DVC cache; the saved file is the grid's record in the repository, which the table and the curves
# read back as they read `dvc exp show`.
KEPT = ("headline", "baselines", "mass", "collapse", "matching", "retrieval", "synonyms", "images", "captions")
KEPT_POINTING = ("word", "settings")


def slim(metrics: dict) -> dict:
    kept = {key: metrics[key] for key in KEPT if key in metrics}
    kept["pointing"] = {name: {key: part[key] for key in KEPT_POINTING if key in part}
                        for name, part in (metrics.get("pointing") or {}).items() if isinstance(part, dict)}
    return kept


def save(rows: dict[str, list[dict]], path: str, rev: str | None) -> None:
    """The grid as a file: {"rev": the commit(s) the runs were queued from (space-separated), "rows": {row:
    [{seed, TEST, VAL}, ..]}}, rows by name and runs by seed, one run per line so that a diff shows which runs
    changed."""
    lines = ['{"rev": ' + json.dumps(rev) + ', "rows": {']
    for r, (name, runs) in enumerate(sorted(rows.items())):
        lines.append(f" {json.dumps(name)}: [")
        for i, run in enumerate(sorted(runs, key=lambda r: r["seed"])):
            body = json.dumps({"seed": run["seed"], **{path_: slim(run[path_]) for path_ in (TEST, VAL)}},
                              sort_keys=True)
            lines.append("  " + body + ("," if i < len(runs) - 1 else ""))
        lines.append(" ]" + ("," if r < len(rows) - 1 else ""))
    lines.append("}}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def load(shown) -> dict[str, list[dict]]:
    """Rows from either source: `dvc exp show --json` (a list of baselines) or a file `--save` wrote."""
    if isinstance(shown, dict) and "rows" in shown:
        return shown["rows"]
    return experiments(shown)


def merge(kept: dict[str, list[dict]], new: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The kept runs with the new ones added; a new run of a row and seed replaces the kept one."""
    merged = {name: {run["seed"]: run for run in runs} for name, runs in kept.items()}
    for name, runs in new.items():
        merged.setdefault(name, {}).update({run["seed"]: run for run in runs})
    return {name: [by_seed[seed] for seed in sorted(by_seed)] for name, by_seed in merged.items()}


def only(rows: dict[str, list[dict]], names: list[str]) -> dict[str, list[dict]]:
    """The named rows, in that order; exits naming the rows that have no finished runs."""
    unknown = [name for name in names if name not in rows]
    if unknown:
        sys.exit(f"no finished runs of {unknown}; rows: {', '.join(sorted(rows))}")
    return {name: rows[name] for name in names}


def dig(d, path):
    for key in path:
        if d is None:
            return None
        d = d.get(key) if isinstance(d, dict) else None
    return d


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student t interval (0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    quantile = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}.get(len(values), 1.96)
    return mean, quantile * statistics.stdev(values) / math.sqrt(len(values))


def cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean, half = t_interval(values)
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def mean_of(runs: list[dict], path: tuple) -> str:
    values = [v for v in (dig(r[TEST], path) for r in runs) if v is not None]
    return f"{statistics.fmean(values):.2f}" if values else "—"


# The README's shorter table: these columns only.
SHORT = ("val: word, multi-shape", "test: word, all", "margin over object prior", "word over any-word map",
         "mass on named / unnamed / background")


def row_cells(runs: list[dict], columns=COLUMNS) -> list[str]:
    cells = []
    for header, source, path in columns:
        if header.startswith("mass"):
            cells.append(" / ".join(mean_of(runs, MASS + (part,)) for part in ("named", "unnamed", "background")))
        elif header == "word over any-word map":   # paired per seed: the same run's own words against its any-word map
            cells.append(cell([dig(r[TEST], HEAD + ("all", "accuracy")) - dig(r[TEST], ANY_WORD)
                               for r in runs if dig(r[TEST], ANY_WORD) is not None]))
        elif header.startswith("held-out"):
            cells.append(" / ".join(mean_of(runs, ("synonyms", space, "held_out", "precision_at_1"))
                                    for space in ("g", "h", "random_fg")))
        else:
            cells.append(cell([dig(r[source], path) for r in runs]))
    return cells


def ranked(rows: dict[str, list[dict]]) -> list[str]:
    """Rows by the validation headline (multi-shape per-word pointing), best first."""
    def key(name):
        values = [dig(r[VAL], HEAD + ("multi_shape", "accuracy")) for r in rows[name]]
        values = [v for v in values if v is not None]
        return -statistics.fmean(values) if values else math.inf
    return sorted(rows, key=key)


def table(rows: dict[str, list[dict]], short: bool = False) -> str:
    """The grid and the curves ranked on validation, then the rows on other data (OTHER_DATA) apart: their splits
    are other images, so they are neither ranked with the grid nor read against its baselines."""
    columns = [c for c in COLUMNS if c[0] in SHORT] if short else COLUMNS
    header = ["| row (by validation) | seeds | " + " | ".join(h for h, _, _ in columns) + " |",
              "|---" * (len(columns) + 2) + "|"]
    grid = {name: runs for name, runs in rows.items() if apart(name) is None}
    lines = list(header)
    for name in ranked(grid):
        lines.append(f"| `{name}` | {len(grid[name])} | " + " | ".join(row_cells(grid[name], columns)) + " |")
    if grid:
        lines += ["", baselines_line(next(iter(grid.values()))[0][TEST])]
    for part, what in (("other-data", "On other data"),
                       ("large", f"On a larger synthesis (data.images = {LARGE_IMAGES}), by training images")):
        names = sorted((n for n in rows if apart(n) == part), key=lambda n: (n.rsplit("-", 1)[0], point_size(n)))
        if names:
            overrides = ", ".join(f"`{n}`: " + " ".join(PARTS[part][point_of(n, part)]) for n in names)
            lines += ["", f"{what} ({overrides}; its own cache):", ""]
            lines += header[:2] + [f"| `{n}` | {len(rows[n])} | " + " | ".join(row_cells(rows[n], columns)) + " |"
                                   for n in names]
            lines += ["", baselines_line(rows[names[0]][0][TEST])]
    return "\n".join(lines)


def point_size(name: str) -> int:
    """The number in a row's last part (large-n1600 -> 1600), so that a curve's rows list in order of size."""
    digits = "".join(c for c in name.rsplit("-", 1)[1] if c.isdigit())
    return int(digits) if digits else 0


def baselines_line(test: dict) -> str:
    prior = dig(test, ("baselines", "object_prior", "all", "accuracy"))
    largest = dig(test, ("baselines", "largest_shape", "all", "accuracy"))
    chance = dig(test, HEAD + ("all", "chance"))
    trials = dig(test, HEAD + ("all", "trials"))
    return (f"Test split, {trials} word trials: uniform chance {chance:.3f}, object prior {prior:.3f}, "
            f"largest-shape prior {largest:.3f} (the same for every row: they ignore the model).")


def compare(rows: dict[str, list[dict]], a: str, b: str, source: str = VAL,
            path: tuple = HEAD + ("multi_shape", "accuracy")) -> str:
    """Row a minus row b, paired by training seed (the same seed gives both rows the same initial weights and the
    same batches, so the pair's difference is what the rows' settings do): the mean and its 95 % t interval."""
    by_seed = [{r["seed"]: dig(r[source], path) for r in rows[name] if "seed" in r} for name in (a, b)]
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
    if len(seeds) < 2:
        raise SystemExit(f"{a} and {b} share {len(seeds)} seed(s); a paired interval needs 2 or more")
    diffs = [by_seed[0][s] - by_seed[1][s] for s in seeds]
    mean, half = t_interval(diffs)
    verdict = "a tie (the interval holds 0)" if mean - half <= 0 <= mean + half else (
        f"{a} is better" if mean > 0 else f"{b} is better")
    where = "validation" if source == VAL else "test"
    return (f"{a} - {b}, {where}, paired over seeds {seeds}: {mean:+.3f} ± {half:.3f} "
            f"[{', '.join(f'{d:+.3f}' for d in diffs)}]: {verdict}")


# Curve name -> (x label, {x: point}); the row's own runs give the d_g = 128 and all-images points (None).
CURVE_POINTS = {"dg": ("d_g", {64: "dg64", 128: None, 256: "dg256"}),
                "data": ("training images", {200: "n200", 400: "n400", 800: None}),
                "data_large": (f"training images (of data.images = {LARGE_IMAGES})",
                               {n: f"large-n{n}" for n in LARGE_SIZES})}


def curves(rows: dict[str, list[dict]], default: str, out_dir: str) -> list[str]:
    """One CSV (x, seed, validation and test headline) and one PNG (mean and seed interval) per curve of the points
    run around the row `default` (f"{default}-{point}")."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for curve, (label, points) in CURVE_POINTS.items():
        lines, series = ["x,seed,val_word_multi,test_word_multi,test_object_prior"], {}
        for x, row in points.items():
            for seed, run in enumerate(rows.get(f"{default}-{row}" if row else default, [])):
                values = (dig(run[VAL], HEAD + ("multi_shape", "accuracy")),
                          dig(run[TEST], HEAD + ("multi_shape", "accuracy")),
                          dig(run[TEST], ("headline", "object_prior_multi")))
                lines.append(f"{x},{seed}," + ",".join(f"{v:.6f}" for v in values))
                series.setdefault(x, []).append(values)
        if not series:   # not run (yet): no file rather than an empty one
            continue
        (out / f"curve_{curve}.csv").write_text("\n".join(lines) + "\n")
        figure = Figure(figsize=(4.2, 3.0), dpi=120)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        xs = sorted(series)
        for k, name in ((0, "validation"), (1, "test")):
            stats = [t_interval([v[k] for v in series[x]]) for x in xs]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[0 if math.isnan(h) else h for _, h in stats], marker="o",
                        capsize=3, label=f"{name}: per-word pointing, multi-shape")
        ax.plot(xs, [statistics.fmean(v[2] for v in series[x]) for x in xs], "k--", label="object prior (test)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(label)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="lower right")
        figure.tight_layout()
        figure.savefig(out / f"curve_{curve}.png")
        written += [str(out / f"curve_{curve}.csv"), str(out / f"curve_{curve}.png")]
    return written


def queue(rows: dict[str, list[str]], seeds: int, first_seed: int = 0) -> None:
    for name, overrides in rows.items():
        for seed in range(first_seed, first_seed + seeds):
            command = ["dvc", "exp", "run", "--queue", "evaluate", "evaluate_val", "-n", f"{name}-s{seed}",
                       "-S", f"train.seed={seed}", "-S", f"train.epochs={TRIAL_EPOCHS}",
                       # `dvc queue start --jobs 2` runs two at once: one thread each, not two fighting for a core
                       "-S", "train.num_threads=1"]
            for override in overrides:
                command += ["-S", override]
            subprocess.run(command, check=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="queue a part of the trial as dvc experiments")
    q.add_argument("part", choices=("grid", "curves", "other-data", "large"))
    q.add_argument("--seeds", type=int, default=SEEDS)
    q.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 "
                   "(--first-seed 3 --seeds 2: the 4th and 5th seeds of rows that overlap)")
    q.add_argument("--rows", nargs="*", help="only these rows")
    q.add_argument("--around", default=DEFAULT_ROW, choices=sorted(GRID),
                   help="the grid row the curves, other data and the larger synthesis are run around")
    t = sub.add_parser("table", help="print the table from `dvc exp show --json` (- reads it from stdin)")
    t.add_argument("source", nargs="?", default=None)
    t.add_argument("--rev", help="the commit the experiments were queued from (default: HEAD)")
    t.add_argument("--save", help="also write every run's metrics (the fields the docs read) to this file, "
                   "which `table FILE` and `curves FILE` read back")
    t.add_argument("--merge", help="a file `--save` wrote: its runs first, then these (a row's seed run again "
                   "replaces the kept one), so that runs queued from several commits make one record")
    t.add_argument("--short", action="store_true", help="the README's columns only")
    t.add_argument("--rows", nargs="*", help="only these rows (the README's: the default, no OT loss, balanced OT, ...)")
    d = sub.add_parser("compare", help="row A minus row B on validation, paired by seed, with its 95 % t interval")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("source", nargs="?", default=None)
    d.add_argument("--rev", help="the commit the experiments were queued from (default: HEAD)")
    d.add_argument("--test", action="store_true", help="on test instead (read once, for the report)")
    c = sub.add_parser("curves", help="write the d_g and data-size curves from `dvc exp show --json`")
    c.add_argument("source", nargs="?", default=None)
    c.add_argument("--rev", help="the commit the experiments were queued from (default: HEAD)")
    c.add_argument("--default", default=DEFAULT_ROW, help="the grid row the curves were run around (its own "
                   "runs give the points at d_g = 128 and at all images)")
    c.add_argument("--out", default="docs/figures")
    args = parser.parse_args(argv)
    if args.command == "queue":
        rows = ({name: GRID[name] for name in PRIORITY} if args.part == "grid"
                else around(args.around, PARTS[args.part]))
        if args.rows:   # a point's own name (large-n800) or its row's (lambda0-large-n800)
            args.rows = [name if name in rows or args.part == "grid" else f"{args.around}-{name}"
                         for name in args.rows]
            unknown = sorted(set(args.rows) - set(rows))
            if unknown:
                parser.error(f"unknown rows {unknown}; the {args.part} has {sorted(rows)}")
            rows = {name: rows[name] for name in args.rows}
        queue(rows, args.seeds, args.first_seed)
        return
    if args.source is not None and args.source != "-":
        with open(args.source) as f:
            shown = json.load(f)
    elif args.source == "-":
        shown = json.load(sys.stdin)
    else:
        command = ["dvc", "exp", "show", "--json"] + (["--rev", args.rev] if args.rev else [])
        shown = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    rows = load(shown)
    if not rows:
        sys.exit("no finished experiments named ROW-sSEED with both metrics files; run `trial.py queue` first")
    if args.command == "compare":
        print(compare(only(rows, [args.a, args.b]), args.a, args.b, TEST if args.test else VAL))
        return
    if args.command == "curves":
        print("\n".join(curves(rows, args.default, args.out)))
        return
    rev = args.rev
    if args.merge:
        with open(args.merge) as f:
            kept = json.load(f)
        revs = (kept.get("rev") or "").split() + [args.rev or "HEAD"]
        rows, rev = merge(load(kept), rows), " ".join(dict.fromkeys(revs))   # each commit once, in order
    if args.save:
        save(rows, args.save, rev)
    if args.rows:
        rows = only(rows, args.rows)
    print(table(rows, short=args.short))


if __name__ == "__main__":
    main(sys.argv[1:])
