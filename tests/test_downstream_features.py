"""Inputs and pooling: sentence pairs as [CLS] A [SEP] B [SEP], the flat token bank, [CLS]/mean pooling."""
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from pipeline.downstream.features import tokenize_pairs
from pipeline.downstream.glue import GlueExample
from pipeline.downstream.probe import TokenBank
from pipeline.encoders.offline import resolve_text_name
from pipeline.grounded.vectors import TokenFeatures, masked_pool, pool


def test_pairs_layout_segments_and_truncation():
    tok = AutoTokenizer.from_pretrained(resolve_text_name("offline:minilm"))
    ex = [GlueExample("a", "one two three four five six seven", "eight nine", 0), GlueExample("b", "short", "pair", 1)]
    p = tokenize_pairs(ex, tok, max_length=8)
    # longest_first cuts the longer sentence; the second stays whole.
    assert tok.convert_ids_to_tokens(p.ids[0]) == ["[CLS]", "one", "two", "three", "[SEP]", "eight", "nine", "[SEP]"]
    assert p.type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1] and p.type_ids[1].tolist() == [0, 0, 0, 1, 1]
    assert p.truncated == [True, False]
    assert p.spans[0][5].tolist() == [0, 5]  # "eight": offsets are within its own sentence
    single = tokenize_pairs([GlueExample("c", "only one", None, 1)], tok, max_length=8)
    assert tok.convert_ids_to_tokens(single.ids[0]) == ["[CLS]", "only", "one", "[SEP]"] and not single.truncated[0]


def test_token_bank_gather_and_padding():
    states = [np.full((n, 2), k, np.float16) + np.arange(n)[:, None] for k, n in enumerate([3, 1, 4])]
    bank = TokenBank(states)
    rows, segments, first = bank.gather([2, 0])
    assert rows[:, 0].tolist() == [2, 3, 4, 5, 0, 1, 2] and segments.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert first.tolist() == [0, 4]
    x, mask = bank.padded([1, 2])
    assert x.shape == (2, 4, 2) and mask.tolist() == [[True, False, False, False], [True] * 4]
    assert x[0, 0, 0] == 1 and x[1, :, 0].tolist() == [2, 3, 4, 5] and (x[0, 1:] == 0).all()


def test_flat_and_padded_pooling_agree():
    bank = TokenBank([np.random.default_rng(k).normal(size=(n, 3)).astype(np.float32) for k, n in enumerate([2, 5])])
    rows, segments, first = bank.gather([0, 1])
    x, mask = bank.padded([0, 1])
    for how in ("cls", "mean"):
        assert torch.allclose(pool(rows, segments, first, 2, how), masked_pool(x, mask, how), atol=1e-6)
    assert torch.allclose(pool(rows, segments, first, 2, "mean")[1], rows[2:].mean(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(rows, segments, first, 2, "max")


def test_token_features_concatenate_and_freeze():
    f_g = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.GELU(), torch.nn.Linear(6, 3))
    frozen, tuned, base = TokenFeatures(4, f_g), TokenFeatures(4, f_g, tune=True), TokenFeatures(4, None)
    h = torch.randn(5, 4)
    assert (frozen.dim, base.dim) == (7, 4) and torch.equal(base(h), h)
    out = frozen(h)
    assert torch.equal(out[:, :4], h) and torch.allclose(out[:, 4:], f_g(h)) and not out.requires_grad
    assert tuned(h).requires_grad and all(p.requires_grad for p in f_g.parameters())
