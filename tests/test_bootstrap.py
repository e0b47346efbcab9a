"""The cluster bootstrap over images: known answers, coverage of a known rate, clustering, pairing."""
import numpy as np

from pipeline.evaluation.bootstrap import ClusterBootstrap


def test_all_hits_give_the_degenerate_interval():
    images = np.repeat(np.arange(20), 3)
    assert ClusterBootstrap(images, 200, seed=0).interval(np.ones(60)) == [1.0, 1.0]
    assert ClusterBootstrap(images, 200, seed=0).interval(np.zeros(60)) == [0.0, 0.0]


def test_a_bernoulli_rate_is_covered_and_the_width_is_the_binomial_one():
    rng = np.random.default_rng(1)
    images = np.repeat(np.arange(400), 3)                  # 1 200 independent trials, p = 0.3
    hits = (rng.random(len(images)) < 0.3).astype(float)
    low, high = ClusterBootstrap(images, 1000, seed=0).interval(hits)
    assert low < 0.3 < high and low < hits.mean() < high
    # 2 x 1.96 x sqrt(p (1 - p) / n) = 0.052 for independent trials.
    assert 0.04 < high - low < 0.065


def test_an_images_trials_go_together():
    # 100 images of 10 trials each, half all hits and half all misses: 100 independent units, not 1 000,
    # so the interval is as wide as a binomial over images (2 x 1.96 x 0.05 = 0.196).
    images = np.repeat(np.arange(100), 10)
    hits = np.repeat(np.arange(100) % 2, 10).astype(float)
    low, high = ClusterBootstrap(images, 1000, seed=0).interval(hits)
    assert low < 0.5 < high and 0.15 < high - low < 0.25
    shuffled = ClusterBootstrap(np.arange(1000), 1000, seed=0).interval(hits)
    assert shuffled[1] - shuffled[0] < 0.08          # treating trials as independent would claim this


def test_seeded_paired_and_masked():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 50, 300)
    model, prior = (rng.random(300) < 0.7).astype(float), rng.random(300)
    boot = ClusterBootstrap(images, 500, seed=3)
    assert boot.interval(model) == ClusterBootstrap(images, 500, seed=3).interval(model)
    assert boot.interval(model) != ClusterBootstrap(images, 500, seed=4).interval(model)
    # The same resamples for every statistic: the difference's rates are the difference of the rates.
    np.testing.assert_allclose(boot.rates(model - prior), boot.rates(model) - boot.rates(prior), atol=1e-12)
    assert boot.interval(model - model) == [0.0, 0.0]
    # A mask restricts the trials; a mask with none gives no interval, nor do zero resamples.
    mask = images < 25
    low, high = boot.interval(model, mask)
    assert low <= model[mask].mean() <= high
    assert boot.interval(model, np.zeros(300, dtype=bool)) is None
    assert ClusterBootstrap(images, 0).interval(model) is None
