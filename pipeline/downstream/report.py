"""The comparison a downstream run leaves behind: baseline vs grounded (vs the random-f control),
mean ± std over seeds.

    OUT/comparison.json   {"task", "mode", "seeds", "metrics": {name: {"baseline": {mean, std, values},
                           "grounded": {...}, "random_fg": {...}, "delta": grounded mean - baseline mean,
                           "delta_vs_random": grounded mean - random_fg mean}}, "results": per seed, ...}
    OUT/comparison.md     the same as a Markdown table

`std` is the sample standard deviation (ddof 1) over seeds; 0 for a single seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.atomic import atomic_path, write_json_atomic


def summarize(results: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    """{variant: [scores of seed 0, seed 1, ...]} -> {metric: {variant: {mean, std, values}, deltas}}.

    `delta` is grounded minus baseline; with the random-f control, `delta_vs_random` is grounded minus
    random_fg: the part of the gain that a same-shaped untrained f does not also give."""
    names = list(results["baseline"][0])
    out = {}
    for name in names:
        row = {}
        for v, per_seed in results.items():
            values = [float(s[name]) for s in per_seed]
            row[v] = {"mean": float(np.mean(values)),
                      "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "values": values}
        row["delta"] = row["grounded"]["mean"] - row["baseline"]["mean"]
        if "random_fg" in results:
            row["delta_vs_random"] = row["grounded"]["mean"] - row["random_fg"]["mean"]
        out[name] = row
    return out


def markdown(payload: dict) -> str:
    variants = list(payload["results"])
    control = "random_fg" in variants
    head = "| metric | " + " | ".join(variants) + " | Δ grounded − baseline |" + (" Δ grounded − random_fg |" if control else "")
    lines = [f"## {payload['task']} ({payload['mode']}, {len(payload['seeds'])} seeds)", "",
             head, "|" + "---|" * (len(variants) + 2 + control)]
    for name, row in payload["metrics"].items():
        if name.endswith("total"):  # SQuAD's question counts: the same in every column, not a score
            continue
        cells = [f"{row[v]['mean']:.4f} ± {row[v]['std']:.4f}" for v in variants]
        deltas = [f"{row['delta']:+.4f}"] + ([f"{row['delta_vs_random']:+.4f}"] if control else [])
        lines.append(f"| {name} | " + " | ".join(cells + deltas) + " |")
    lines += ["", f"baseline: the head on h alone. grounded: the same head on [h; f_g(h)] with f_g from "
                  f"`{payload.get('run', '?')}`." + (" random_fg: the same head on [h; f(h)], f an untrained "
                                                      "MLP of f_g's shape (a fresh one per seed)." if control else "")]
    return "\n".join(lines) + "\n"


def write_comparison(out_dir: Path, payload: dict) -> tuple[Path, Path]:
    """`payload` holds task, mode, seeds, results (per variant, per seed) and any details to keep."""
    payload = dict(payload, metrics=summarize(payload["results"]))
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "comparison.json", out_dir / "comparison.md"
    write_json_atomic(json_path, payload)
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(markdown(payload))
    return json_path, md_path
