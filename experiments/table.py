"""The README's experiments table, regenerated from `dvc exp show --json`: one row per experiment, mean ± std
over its seeds (experiments named ROW-sSEED, as experiments/queue_table.sh queues them).

    python experiments/table.py            # reads `dvc exp show --json` itself
    dvc exp show --json | python experiments/table.py -

Every row is evaluated by the same `evaluate` stage on the same cache: the pointing game at the run's own
OT settings and at the common setting (evaluate.common), so rows compare like with like.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import defaultdict

METRICS = "runs/default/metrics.json"
COLUMNS = [  # (header, path in metrics.json)
    ("pointing, token (own)", ("pointing", "plan", "token", "accuracy")),
    ("pointing, token (common)", ("pointing", "plan_common", "token", "accuracy")),
    ("pointing, phrase (common)", ("pointing", "plan_common", "phrase", "accuracy")),
    ("colour / shape / size (common)", None),
    ("similarity map, token", ("pointing", "similarity", "token", "accuracy")),
    ("t→i R@1", ("retrieval", "t2i", "R@1")),
    ("match acc", ("matching", "accuracy")),
    ("synonym P@1 of g", ("synonyms", "g", "precision_at_1")),
]
KINDS = ("colour", "shape", "size")


def experiments(shown: list) -> dict[str, list[dict]]:
    """{row name: [metrics of each seed]} from `dvc exp show --json`."""
    rows = defaultdict(list)
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            # A queued or running experiment shows its baseline's metrics until it finishes: finished ones only.
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue
            for rev in exp.get("revs", []):
                name = rev.get("name") or exp.get("name") or ""
                match = re.fullmatch(r"(.+)-s(\d+)", name)
                data = (rev.get("data") or {}).get("metrics", {}).get(METRICS, {}).get("data")
                if match and data:
                    rows[match.group(1)].append(data)
    return rows


def dig(d: dict, path: tuple):
    for key in path:
        d = d[key]
    return d


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: dict[str, list[dict]], order: list[str] | None = None) -> str:
    names = [n for n in (order or []) if n in rows] + sorted(n for n in rows if n not in (order or []))
    lines = ["| run | seeds | " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for name in names:
        runs = rows[name]
        cells = []
        for _, path in COLUMNS:
            if path is None:
                cells.append(" / ".join(f"{statistics.mean(dig(r, ('pointing', 'plan_common', k, 'accuracy')) for r in runs):.2f}"
                                        for k in KINDS))
            else:
                cells.append(mean_std([dig(r, path) for r in runs]))
        lines.append(f"| `{name}` | {len(runs)} | " + " | ".join(cells) + " |")
    first = next(iter(rows.values()))[0]
    chance = dig(first, ("pointing", "plan_common", "token"))
    lines.append("")
    lines.append(f"Chance: pointing {chance['chance']:.3f} per token ({chance['trials']} token trials), "
                 f"t→i R@1 {first['retrieval']['t2i']['chance@1']:.4f} ({first['retrieval']['t2i']['candidates']} images).")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[1:] == ["-"]:
        shown = json.load(sys.stdin)
    else:
        shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True,
                                          text=True).stdout)
    order = ["default", "lambda0", "full-ot", "no-local", "uniform-marginals", "paper-objective", "matching-only"]
    print(table(experiments(shown), order))


if __name__ == "__main__":
    main(sys.argv)
