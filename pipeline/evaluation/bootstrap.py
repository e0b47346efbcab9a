"""Percentile intervals by the cluster bootstrap over images.

The trials of one image are not independent (its captions name the same shapes, on the same patches),
so the unit resampled is the image: draw the split's images with replacement, keep all of each drawn
image's trials, recompute the rate. Every statistic of one report is computed on the same draws, so a
difference of two rates on the same trials (the margin over a baseline) gets a paired interval.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
_CHUNK = 100   # resamples drawn at a time, bounding memory at _CHUNK x images counts


class ClusterBootstrap:
    """Resamples of the images `clusters` (one key per trial), seeded, shared by every statistic asked."""

    def __init__(self, clusters: np.ndarray, resamples: int = RESAMPLES, seed: int = 0):
        self.keys, self.cluster = np.unique(np.asarray(clusters), return_inverse=True)
        self.resamples, self.seed = int(resamples), int(seed)

    @property
    def images(self) -> int:
        return len(self.keys)

    def _weights(self):
        """(chunk, images) multiplicities of each image in each resample, the same for every call."""
        rng, n = np.random.default_rng(self.seed), len(self.keys)
        for start in range(0, self.resamples, _CHUNK):
            yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, self.resamples - start)).astype(np.float64)

    def rates(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(resamples,) the mean of `values` over the masked trials of each resample (NaN where a resample
        drew none of them)."""
        values = np.asarray(values, dtype=np.float64)
        mask = np.ones(len(values), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        n = len(self.keys)
        sums = np.bincount(self.cluster[mask], weights=values[mask], minlength=n)
        counts = np.bincount(self.cluster[mask], minlength=n).astype(np.float64)
        out = []
        for w in self._weights():
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append((w @ sums) / (w @ counts))
        return np.concatenate(out) if out else np.zeros(0)

    def interval(self, values: np.ndarray, mask: np.ndarray | None = None, level: float = LEVEL) -> list[float] | None:
        """[low, high], the percentile interval of the mean of `values` over the masked trials; None without
        resamples or trials."""
        if self.resamples <= 0 or not len(self.keys):
            return None
        rates = self.rates(values, mask)
        rates = rates[np.isfinite(rates)]
        if not len(rates):
            return None
        tail = 100 * (1 - level) / 2
        low, high = np.percentile(rates, [tail, 100 - tail])
        return [float(low), float(high)]
