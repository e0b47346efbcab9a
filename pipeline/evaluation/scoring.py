"""Score every caption of a split against every image, in blocks, without holding the C x N matrix
unless it is small.

Retrieval needs whole rows (text->image) and whole columns (image->text). Rows come block by block;
for columns, a first pass finds each image's best own-caption score and a second pass counts, block by
block, the other captions that reach it (pipeline/evaluation/metrics.py). Memory stays at
block_size x block_size x hidden floats whatever the split's size; the price is computing the scores
twice, unless the whole score matrix fits KEEP_SCORES_BYTES (COCO's 5 000-image test split does), when
the first pass keeps it for the second.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.evaluation.metrics import (best_own_scores, check_finite_scores, image_to_text_ahead,
                                         text_to_image_ranks)

KEEP_SCORES_BYTES = 512 << 20   # above this the second pass recomputes the scores instead of keeping them


@torch.no_grad()
def encode_split(model, reader, block: int, device) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """t0 (C, d_t+d_g) of every caption, vbar (N, d_g) of every image, and each caption's image row."""
    t0 = []
    for s in range(len(reader.text_shards)):
        shard = reader.text_shard(s)
        first = shard["offsets"][:-1]                   # row of each caption's [CLS] token
        h0 = torch.from_numpy(shard["states"][first]).to(device).float()
        t0.append(model.text_global(h0))
    vbar = []
    for start in range(0, reader.num_images, block):
        patches, prefix = reader.image_rows(np.arange(start, min(start + block, reader.num_images)))
        patches = torch.from_numpy(patches).to(device).float()
        prefix = torch.from_numpy(prefix).to(device).float()
        vbar.append(model.f_v(model.global_token(prefix, patches, class_token=reader.class_token)))
    # Text shards hold captions in caption-id order, as the reader's caption indices do.
    return torch.cat(t0), torch.cat(vbar), reader.caption_image


@torch.no_grad()
def score_block(model, t0: torch.Tensor, vbar: torch.Tensor, block: int) -> np.ndarray:
    """Scores (len(t0), N) of a block of captions against every image, image-block by image-block."""
    return torch.cat([model.f_c.pairwise(t0, vbar[j:j + block]) for j in range(0, vbar.shape[0], block)],
                     dim=1).float().cpu().numpy()


def retrieval_ranks(model, t0: torch.Tensor, vbar: torch.Tensor, gold: np.ndarray, block: int,
                    source: str | None = None):
    """0-based text->image rank of every caption and image->text rank of every image with captions.
    source: the checkpoint the model came from, named in the error if a block has a non-finite score."""
    n_images = vbar.shape[0]
    # The pair MLP over every caption x image dominates evaluation (quadratic in the split): when the whole
    # score matrix is small (a 5 000-image / 25 000-caption split: 500 MB), the first pass keeps it.
    kept = [] if len(gold) * n_images * 4 <= KEEP_SCORES_BYTES else None
    t2i, gold_scores = [], []
    for i in range(0, len(gold), block):
        scores = score_block(model, t0[i:i + block], vbar, block)
        # Checked here, where the block is known, before the metrics' own check with its vaguer message.
        check_finite_scores(scores, _block_name(i, len(scores), len(gold), n_images), source, first_row=i)
        g = gold[i:i + block]
        t2i.append(text_to_image_ranks(scores, g))
        gold_scores.append(scores[np.arange(len(g)), g])
        if kept is not None:
            kept.append(scores)
    best = best_own_scores(np.concatenate(gold_scores), gold, n_images)
    ahead = np.zeros(n_images, dtype=np.int64)
    for k, i in enumerate(range(0, len(gold), block)):
        if kept is not None:
            scores, kept[k] = kept[k], None
        else:   # the second pass computes the same scores again; checked again (cheap) rather than trusted
            scores = score_block(model, t0[i:i + block], vbar, block)
            check_finite_scores(scores, _block_name(i, len(scores), len(gold), n_images), source, first_row=i)
        ahead += image_to_text_ahead(scores, gold[i:i + block], best)
    return np.concatenate(t2i), ahead[np.isfinite(best)]


def _block_name(first: int, rows: int, n_captions: int, n_images: int) -> str:
    return f"captions {first}-{first + rows - 1} (of {n_captions}) x images 0-{n_images - 1}"


@torch.no_grad()
def matching_pairs(model, t0: torch.Tensor, vbar: torch.Tensor, gold: np.ndarray, seed: int):
    """Logits and labels of each caption with its own image and with one other image drawn at random
    (seeded): a balanced held-out set for accuracy and ROC-AUC."""
    rng = np.random.default_rng(seed)
    n = vbar.shape[0]
    other = (gold + rng.integers(1, max(n, 2), size=len(gold))) % n     # never the caption's own image
    pos = model.f_c(t0, vbar[torch.as_tensor(gold, device=vbar.device)]).float().cpu().numpy()
    neg = model.f_c(t0, vbar[torch.as_tensor(other, device=vbar.device)]).float().cpu().numpy()
    keep = other != gold                                                  # a one-image split has no negative
    return np.concatenate([pos, neg[keep]]), np.concatenate([np.ones(len(pos)), np.zeros(int(keep.sum()))])
