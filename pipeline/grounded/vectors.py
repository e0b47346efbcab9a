"""Text -> [h; g] pieces shared by GroundedEncoder and the downstream probe and fine-tuning, so both compute
the same vectors for the same text: the tokenisation, [h; f_g(h)] per token and the sentence vector."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

POOLINGS = ("cls", "mean")
# Texts per tokenizer call: bounds the tokenizer's batch encoding in memory; the tokens do not depend on it.
TOKENIZE_CHUNK = 1024


@dataclass
class PairInputs:
    """Tokenised inputs, one entry per text (or text pair), in the inputs' order."""
    ids: list[np.ndarray]        # int32 (n,)
    type_ids: list[np.ndarray]   # int32 (n,): 0 for [CLS] A [SEP], 1 for B [SEP]
    spans: list[np.ndarray]      # int32 (n, 2): character offsets, each in its own sentence
    truncated: list[bool]


def tokenize_texts(a: list[str], b: list[str] | None, tokenizer, max_length: int) -> PairInputs:
    """Single texts (b None) or pairs `[CLS] a [SEP] b [SEP]`, truncating the longer text first, as BERT does."""
    out = PairInputs([], [], [], [])
    for s in range(0, len(a), TOKENIZE_CHUNK):
        part = a[s:s + TOKENIZE_CHUNK]
        enc = tokenizer(part, b[s:s + TOKENIZE_CHUNK] if b is not None else None, truncation="longest_first",
                        max_length=max_length, padding=False, return_offsets_mapping=True,
                        return_token_type_ids=True, return_overflowing_tokens=False)
        for k in range(len(part)):
            out.ids.append(np.asarray(enc["input_ids"][k], np.int32))
            out.type_ids.append(np.asarray(enc["token_type_ids"][k], np.int32))
            out.spans.append(np.asarray(enc["offset_mapping"][k], np.int32).reshape(-1, 2))
            out.truncated.append(bool(enc.encodings[k].overflowing))
    return out


class TokenFeatures(nn.Module):
    """h -> [h; f_g(h)], or h when `grounding` is None. f_g is frozen unless `tune` is true."""

    def __init__(self, dim: int, grounding: nn.Module | None = None, tune: bool = False):
        super().__init__()
        self.grounding = grounding
        self.dim = dim
        self.tune = tune
        if grounding is not None:
            grounding.requires_grad_(tune)
            param = next(grounding.parameters())
            with torch.no_grad():  # d_g as the module says, not as a config might claim
                grounding.eval()
                self.dim += int(grounding(torch.zeros(1, dim, dtype=param.dtype, device=param.device)).shape[-1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.grounding is None:
            return h
        if not self.tune:
            self.grounding.eval()  # a frozen f_g must not apply dropout either
            with torch.no_grad():
                return torch.cat([h, self.grounding(h)], dim=-1)
        return torch.cat([h, self.grounding(h)], dim=-1)


def pool(rows: torch.Tensor, segments: torch.Tensor, first: torch.Tensor, count: int, how: str) -> torch.Tensor:
    """(R, D) token rows -> (count, D): the [CLS] row of each input (`first` holds its row index),
    or the mean over each input's rows, specials included (as sentence-transformers pools)."""
    if how == "cls":
        return rows[first]
    if how == "mean":
        total = rows.new_zeros(count, rows.shape[1]).index_add_(0, segments, rows)
        n = torch.bincount(segments, minlength=count).clamp(min=1).to(rows.dtype)
        return total / n[:, None]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


def masked_pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, D) padded states and a (B, L) mask -> (B, D), the same pooling as `pool`."""
    if how == "cls":
        return states[:, 0]
    if how == "mean":
        m = mask.to(states.dtype)[..., None]
        return (states * m).sum(1) / m.sum(1).clamp(min=1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
