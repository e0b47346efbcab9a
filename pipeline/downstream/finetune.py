"""Fine-tune mode, the paper's setting: the text encoder unfrozen together with f_g and the head,
reading raw text (tokenised on the fly, no cache).

Each seed starts from a fresh copy of the pretrained encoder and of the trained f_g, so seeds are
independent. The grounded model reads `[h; f_g(h)]`, the baseline the same head on `h`; both use
the chosen hidden layer of the encoder, with segment ids for sentence pairs and SQuAD windows.
The encoder gets a small learning rate (BERT's 2e-5), the fresh head and f_g a larger one.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline.downstream.head_training import batches, threads, train_head
from pipeline.downstream.glue import TaskSpec
from pipeline.downstream.heads import PooledHead, SpanHead
from pipeline.downstream.official_metrics import glue_scores, squad_scores
from pipeline.downstream.squad_postprocess import predict_answers
from pipeline.grounded.vectors import PairInputs, TokenFeatures, masked_pool
from pipeline.runtime import autocast, seed_everything


class Encoder(nn.Module):
    """A trainable copy of the text encoder, giving one hidden layer, optionally followed by f_g."""

    def __init__(self, text_encoder, grounding: nn.Module | None):
        super().__init__()
        self.model = copy.deepcopy(text_encoder.model).requires_grad_(True)
        self.layer, self.pad_id = text_encoder.layer, text_encoder.tokenizer.pad_token_id
        grounding = copy.deepcopy(grounding).to(text_encoder.device) if grounding is not None else None
        self.features = TokenFeatures(int(self.model.config.hidden_size), grounding, tune=True)

    def batch(self, ids: list[np.ndarray], type_ids: list[np.ndarray], device) -> tuple[torch.Tensor, ...]:
        width = max(len(x) for x in ids)
        out = np.full((3, len(ids), width), 0, dtype=np.int64)
        out[0].fill(self.pad_id)
        for r, (i, t) in enumerate(zip(ids, type_ids)):
            out[0, r, :len(i)], out[1, r, :len(i)], out[2, r, :len(i)] = i, t, 1
        return tuple(torch.from_numpy(a).to(device) for a in out)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        return self.features(out.hidden_states[self.layer].float())


def _fit(enc: Encoder, head: nn.Module, n: int, step, cfg: dict, seed: int) -> None:
    train_head([{"params": list(enc.model.parameters()), "lr": cfg["finetune_lr"]},
                {"params": list(enc.features.parameters()) + list(head.parameters()), "lr": cfg["head_lr"]}],
               n, step, epochs=cfg["finetune_epochs"], batch_size=cfg["finetune_batch_size"], seed=seed,
               weight_decay=cfg["weight_decay"], warmup_fraction=cfg["warmup_fraction"], modules=(enc, head))


def finetune_glue(spec: TaskSpec, text_encoder, train: tuple[PairInputs, np.ndarray],
                  evals: dict[str, tuple[PairInputs, np.ndarray]], grounding: nn.Module | None, *,
                  cfg: dict, seed: int) -> dict[str, float]:
    with threads(cfg["num_threads"]):
        return _finetune_glue(spec, text_encoder, train, evals, grounding, cfg=cfg, seed=seed)


def _finetune_glue(spec, text_encoder, train, evals, grounding, *, cfg: dict, seed: int) -> dict[str, float]:
    seed_everything(seed)
    device = text_encoder.device
    enc = Encoder(text_encoder, grounding).to(device)
    head = PooledHead(enc.features.dim, spec.num_outputs, cfg["finetune_head_hidden"], cfg["dropout"]).to(device)
    (inputs, y), pooling = train, cfg["pooling"]
    target = torch.as_tensor(y).to(device)

    def run(inp: PairInputs, idx) -> torch.Tensor:
        ids, types, mask = enc.batch([inp.ids[i] for i in idx], [inp.type_ids[i] for i in idx], device)
        with autocast(device, cfg["compute_dtype"]):
            return head(masked_pool(enc(ids, types, mask), mask, pooling)).float()

    _fit(enc, head, len(inputs.ids), lambda idx: head.loss(run(inputs, idx), target[torch.from_numpy(idx).to(device)]),
         cfg, seed)
    scores = {}
    with torch.no_grad():
        for name, (inp, gold) in evals.items():
            pred = torch.cat([head.predict(run(inp, i)).cpu() for i in batches(len(inp.ids), 256)]).numpy()
            scores.update({f"{name}/{k}": v for k, v in glue_scores(spec.metrics, pred, gold).items()})
    return scores


def finetune_squad(text_encoder, train_windows: list, dev: tuple[list, list], grounding: nn.Module | None, *,
                   version: str, cfg: dict, seed: int) -> dict[str, float]:
    """`train_windows` and dev windows are `squad.Window`s; `dev` = (windows, questions)."""
    with threads(cfg["num_threads"]):
        return _finetune_squad(text_encoder, train_windows, dev, grounding, version=version, cfg=cfg, seed=seed)


def _finetune_squad(text_encoder, train_windows, dev, grounding, *, version: str, cfg: dict, seed: int) -> dict[str, float]:
    seed_everything(seed)
    device = text_encoder.device
    enc = Encoder(text_encoder, grounding).to(device)
    head = SpanHead(enc.features.dim, cfg["finetune_head_hidden"], cfg["dropout"]).to(device)
    dev_windows, questions = dev

    def run(windows, idx):
        ids, types, mask = enc.batch([windows[i].input_ids for i in idx], [windows[i].type_ids for i in idx], device)
        with autocast(device, cfg["compute_dtype"]):
            return head(enc(ids, types, mask), mask)

    s_gold = torch.tensor([w.start for w in train_windows], device=device)
    e_gold = torch.tensor([w.end for w in train_windows], device=device)

    def step(idx):
        s, e = run(train_windows, idx)
        i = torch.from_numpy(idx).to(device)
        return head.loss(s, e, s_gold[i], e_gold[i])

    _fit(enc, head, len(train_windows), step, cfg, seed)
    starts, ends = [], []
    with torch.no_grad():
        for idx in batches(len(dev_windows), 64):
            s, e = run(dev_windows, idx)
            for row, i in enumerate(idx):
                n = len(dev_windows[i].input_ids)
                starts.append(s[row, :n].float().cpu().numpy())
                ends.append(e[row, :n].float().cpu().numpy())
    preds = predict_answers(questions, dev_windows, starts, ends, version=version, n_best=cfg["n_best"],
                            max_answer_length=cfg["max_answer_length"], null_threshold=cfg["null_threshold"])
    return squad_scores(questions, {k: p.text for k, p in preds.items()}, version)
