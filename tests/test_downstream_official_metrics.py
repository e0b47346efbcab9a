"""Every downstream metric against values worked out by hand."""
import numpy as np
import pytest

from pipeline.downstream.official_metrics import (accuracy, exact_match, f1_binary, matthews, normalize_answer, pearson,
                                         spearman, squad_scores, token_f1)
from pipeline.downstream.squad import Answer, SquadQuestion


def test_accuracy_and_binary_f1():
    pred, gold = [1, 0, 1, 1], [1, 1, 1, 0]
    assert accuracy(pred, gold) == 0.5
    assert f1_binary(pred, gold) == pytest.approx(2 * 2 / (3 + 3))  # tp 2, fp 1, fn 1
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positives anywhere
    assert f1_binary([0, 0, 1], [1, 1, 0]) == 0.0 and f1_binary([1, 0], [1, 0]) == 1.0
    # labels other than 1 are negatives: tp 1, fp 1 (the 1 against a 2), fn 0 -> 2 / 3
    assert f1_binary([1, 1, 0], [1, 2, 0]) == pytest.approx(2 / 3)


def test_matthews_by_hand():
    # tp 2, fp 1, tn 2, fn 1 -> (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    assert matthews([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    # tp 2, tn 0, fp 1, fn 1 -> (0 - 1) / sqrt(3*3*1*1) = -1/3
    assert matthews([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(-1 / 3)
    assert matthews([1, 1, 1], [1, 0, 1]) == 0.0  # a constant prediction: the GLUE convention is 0
    assert matthews([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / np.sqrt(84))
    # ties share the mean rank: x ranks 1, 2.5, 2.5, 4 -> r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.sqrt(0.9))
    # monotone but not linear: Spearman 1, Pearson below it; reversed order: -1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(151 / np.sqrt(5 * 6849))  # 0.816
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # a constant side has no correlation: 0, not scipy's NaN (a mean over seeds must stay a number)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0 and spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert pearson([1], [2]) == 0.0


def test_squad_normalisation_em_f1():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("the Eiffel Tower", "Eiffel tower.") == 1.0
    assert token_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)  # p = r = 2/3
    assert token_f1("red car", "red bus stop") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert token_f1("", "") == 1.0 and token_f1("", "dog") == 0.0 and token_f1("dog", "") == 0.0


def _q(qid, *answers):
    return SquadQuestion(qid, "?", "ctx", tuple(Answer(a, 0) for a in answers), is_impossible=not answers)


def test_squad_scores_v2_split_and_max_over_golds():
    qs = [_q("a", "Paris", "the city of Paris"), _q("b", "red bus"), _q("c"), _q("d")]
    preds = {"a": "city of Paris", "b": "red car", "c": "", "d": "something"}
    s = squad_scores(qs, preds, "2.0")
    # EM per question: 1 (second gold), 0, 1 (empty vs no answer), 0; F1: 1, 0.5, 1, 0
    assert s["exact"] == pytest.approx(50.0) and s["f1"] == pytest.approx(62.5)
    assert s["HasAns_exact"] == pytest.approx(50.0) and s["HasAns_f1"] == pytest.approx(75.0)
    assert s["NoAns_exact"] == pytest.approx(50.0) and s["NoAns_f1"] == pytest.approx(50.0)
    assert s["HasAns_total"] == 2 and s["NoAns_total"] == 2
    v1 = squad_scores(qs[:2], {"a": "Paris"}, "1.1")  # a missing prediction counts as wrong
    assert v1["exact"] == 50.0 and "HasAns_exact" not in v1


def test_squad_v1_keeps_golds_that_normalise_to_nothing():
    # SQuAD v1.1's evaluate-v1.1.py takes every gold answer as is and scores F1 0 whenever no token is
    # shared, even when both sides normalise to nothing; only v2.0's script drops empty golds and
    # counts "" against "" as a match. Gold "The" normalises to "": a prediction "a" is then an exact
    # match with F1 0 under v1.1 (max over golds, so "Paris" cannot raise either).
    qs = [_q("x", "The", "Paris")]
    s = squad_scores(qs, {"x": "a"}, "1.1")
    assert s["exact"] == 100.0 and s["f1"] == 0.0
    assert token_f1("a", "the", "1.1") == 0.0 and token_f1("", "", "1.1") == 0.0
    assert squad_scores([_q("y", "the")], {"y": ""}, "1.1") == {"exact": 100.0, "f1": 0.0, "total": 1.0}


def test_summary_and_table_by_hand():
    from pipeline.downstream.report import markdown, summarize

    results = {"baseline": [{"dev/accuracy": 0.5}, {"dev/accuracy": 0.7}],
               "grounded": [{"dev/accuracy": 0.8}, {"dev/accuracy": 0.8}],
               "random_fg": [{"dev/accuracy": 0.6}, {"dev/accuracy": 0.9}]}
    row = summarize(results)["dev/accuracy"]
    assert row["baseline"]["mean"] == pytest.approx(0.6) and row["baseline"]["std"] == pytest.approx(0.2 / np.sqrt(2))
    assert row["grounded"]["std"] == 0.0 and row["delta"] == pytest.approx(0.2)
    assert row["delta_vs_random"] == pytest.approx(0.05)
    table = markdown({"task": "rte", "mode": "probe", "seeds": [0, 1], "results": results,
                      "metrics": summarize(results), "run": "runs/x"})
    assert "| dev/accuracy | 0.6000 ± 0.1414 | 0.8000 ± 0.0000 | 0.7500 ± 0.2121 | +0.2000 | +0.0500 |" in table
    del results["random_fg"]
    assert "delta_vs_random" not in summarize(results)["dev/accuracy"]
