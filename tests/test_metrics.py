"""Metrics on constructed score matrices: exact AUC with ties, recall both ways, blockwise scoring."""
import itertools

import numpy as np
import pytest
import torch

from pipeline.evaluation.metrics import (average_ranks, chance_recall, image_to_text_ranks, matching_accuracy,
                                         retrieval, roc_auc, text_to_image_ranks)
from pipeline.evaluation.scoring import retrieval_ranks
from pipeline.modules import StageTwoModules


def brute_auc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_auc_hand_computed_with_ties():
    scores = [0.9, 0.5, 0.5, 0.1]
    labels = [1, 1, 0, 0]
    # pairs (pos, neg): (.9,.5)=1 (.9,.1)=1 (.5,.5)=1/2 (.5,.1)=1 -> 3.5 / 4
    assert roc_auc(scores, labels) == pytest.approx(0.875)
    assert roc_auc([1, 2, 3], [0, 0, 1]) == 1.0
    assert roc_auc([3, 2, 1], [0, 0, 1]) == 0.0
    assert roc_auc([7, 7, 7, 7], [1, 0, 1, 0]) == 0.5


def test_auc_equals_pair_counting_on_heavy_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=60).astype(float)
    labels = rng.integers(0, 2, size=60)
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError):
        roc_auc([1.0, 2.0], [1, 1])


def test_average_ranks():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_matching_accuracy():
    assert matching_accuracy([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0]) == 0.75


def test_recall_hand_computed():
    # 3 captions, 3 images; caption i belongs to image gold[i].
    scores = np.array([[0.9, 0.1, 0.2],    # gold 0: rank 0
                       [0.8, 0.3, 0.1],    # gold 1: image 0 outranks it -> rank 1
                       [0.5, 0.5, 0.5]])   # gold 2: a three-way tie counts against the model -> rank 2
    gold = np.array([0, 1, 2])
    assert text_to_image_ranks(scores, gold).tolist() == [0, 1, 2]
    # image -> text, by columns: image 0 ranks its caption 0 (0.9) first; image 1's caption 1 (0.3) is
    # below caption 2 (0.5) -> rank 1; image 2's caption 2 (0.5) is above 0.2 and 0.1 -> rank 0.
    assert image_to_text_ranks(scores, gold).tolist() == [0, 1, 0]
    r = retrieval(text_to_image_ranks(scores, gold), image_to_text_ranks(scores, gold), gold, 3, ks=(1, 2))
    assert r["t2i"]["R@1"] == pytest.approx(1 / 3) and r["t2i"]["R@2"] == pytest.approx(2 / 3)
    assert r["i2t"]["R@1"] == pytest.approx(2 / 3) and r["i2t"]["R@2"] == 1.0
    assert r["t2i"]["candidates"] == 3 and r["t2i"]["chance@1"] == pytest.approx(1 / 3)


def test_image_to_text_counts_only_other_images_captions():
    # Image 0 owns captions 0 and 1; its best own caption is 1 (0.7), beaten only by caption 2 (0.8).
    scores = np.array([[0.6, 0.0], [0.7, 0.0], [0.8, 0.9]])
    gold = np.array([0, 0, 1])
    assert image_to_text_ranks(scores, gold).tolist() == [1, 0]


def test_chance_levels():
    assert chance_recall(10, 1, 1) == pytest.approx(0.1)
    assert chance_recall(10, 1, 5) == pytest.approx(0.5)
    assert chance_recall(4, 2, 1) == pytest.approx(0.5)
    assert chance_recall(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert chance_recall(3, 1, 10) == 1.0
    gold = np.repeat(np.arange(5), 2)                      # 10 captions, 2 per image
    r = retrieval(np.zeros(10, int), np.zeros(5, int), gold, 5, ks=(1,))
    assert r["i2t"]["candidates"] == 10 and r["i2t"]["chance@1"] == pytest.approx(0.2)


@pytest.mark.parametrize("block", [1, 3, 100])
def test_blockwise_scoring_equals_the_full_matrix(block):
    torch.manual_seed(0)
    model = StageTwoModules(6, 5, d_g=4, hidden=8).eval()
    t0, vbar = torch.randn(11, 10), torch.randn(7, 4)
    gold = np.array([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 6])
    with torch.no_grad():
        full = model.f_c.pairwise(t0, vbar).numpy()
        aligned = model.f_c(t0[:, None].expand(-1, 7, -1), vbar[None].expand(11, -1, -1)).numpy()
    assert np.allclose(full, aligned, atol=1e-5)            # the split first layer is the same function
    t2i, i2t = retrieval_ranks(model, t0, vbar, gold, block)
    assert t2i.tolist() == text_to_image_ranks(full, gold).tolist()
    assert i2t.tolist() == image_to_text_ranks(full, gold).tolist()


# Non-finite scores: every comparison with NaN is False, so a NaN gold score used to rank 0 (a hit at R@1)
# and an image whose own captions score NaN used to drop out of image->text. Now no rank is computed.
NAN_GOLD = np.array([[np.nan, 0.1, 0.2], [0.3, 0.9, 0.1], [0.1, 0.2, 0.8]])
NAN_IMAGE = np.array([[0.9, np.nan, 0.2], [0.3, np.nan, 0.1], [0.1, np.nan, 0.8]])


@pytest.mark.parametrize("scores", [NAN_GOLD, NAN_IMAGE, np.where(NAN_GOLD != NAN_GOLD, np.inf, NAN_GOLD)])
def test_non_finite_scores_are_an_error_not_a_hit(scores):
    from pipeline.errors import DataError
    gold = np.array([0, 1, 2])
    for ranks in (text_to_image_ranks, image_to_text_ranks):
        with pytest.raises(DataError, match="not finite"):
            ranks(scores, gold)


def test_non_finite_block_names_the_block_and_the_checkpoint():
    from pipeline.errors import DataError
    torch.manual_seed(0)
    model = StageTwoModules(6, 5, d_g=4, hidden=8).eval()
    t0, vbar = torch.randn(11, 10), torch.randn(7, 4)
    t0[5, 0] = float("nan")                                # caption 5, in the second block of 3
    gold = np.array([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 6])
    with pytest.raises(DataError) as caught:
        retrieval_ranks(model, t0, vbar, gold, 3, source="runs/x/checkpoints/best.pt")
    message = str(caught.value)
    assert "runs/x/checkpoints/best.pt" in message and "checkpoint" in message
    assert "captions 3-5 (of 11) x images 0-6" in message and "caption 5, image 0" in message
