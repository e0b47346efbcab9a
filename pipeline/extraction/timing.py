"""Per-batch timing of the three phases clip-retrieval's runner times: read, infer, write."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

PHASES = ("read", "infer", "write")


class Timer:
    def __init__(self):
        self.samples = {p: [] for p in PHASES}
        self.items = 0
        self.start = time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        yield
        self.samples[name].append(time.perf_counter() - t0)

    def summary(self) -> dict:
        wall = time.perf_counter() - self.start
        out = {"items": self.items, "wall_s": round(wall, 4),
               "items_per_s": round(self.items / wall, 3) if wall > 0 and self.items else 0.0}
        for p, xs in self.samples.items():
            a = np.asarray(xs, dtype=np.float64)
            out[p] = {"batches": len(xs), "total_s": round(float(a.sum()), 4),
                      "mean_s": round(float(a.mean()), 5) if len(a) else 0.0,
                      "p90_s": round(float(np.percentile(a, 90)), 5) if len(a) else 0.0}
        return out


def merge_summaries(parts: list[dict]) -> dict:
    """Rank summaries -> one: totals add up, throughput is items over the slowest rank's wall time."""
    parts = [p for p in parts if p and p.get("items")]
    if not parts:
        return {"items": 0, "ranks": 0}
    wall = max(p["wall_s"] for p in parts)
    items = sum(p["items"] for p in parts)
    out = {"items": items, "ranks": len(parts), "wall_s": wall, "items_per_s": round(items / wall, 3) if wall else 0.0}
    for ph in PHASES:
        batches = sum(p[ph]["batches"] for p in parts)
        total = sum(p[ph]["total_s"] for p in parts)
        out[ph] = {"batches": batches, "total_s": round(total, 4), "mean_s": round(total / batches, 5) if batches else 0.0,
                   "p90_s_max": max(p[ph]["p90_s"] for p in parts)}
    return out
