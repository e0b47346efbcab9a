"""GroundedEncoder: texts -> h, g = f_g(h) and t = [h; g] per token, and one pooled vector per text.

    enc = GroundedEncoder.from_pretrained("exports/default", device="cpu")   # or .from_run("runs/default")
    out = enc.encode(["a small red circle left of a blue square"], batch_size=32)
    out.t, out.h, out.g, out.attention_mask, out.offsets, out.pooled

One code path with the downstream probe, function for function: texts are tokenised by
`features.tokenize_texts` (the probe's GLUE tokenisation), h comes from `TextEncoder.encode` in the
length-sorted batches of the extraction runner (`length_batches`), [h; f_g(h)] from `heads.TokenFeatures`
and the sentence vector from `heads.masked_pool` (the padded twin of the probe's `pool`). The probe reads
h back from a float16 cache, so the two agree to float16 precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.encoders.text import TextEncoder, Tokens, length_batches, load_text_encoder
from pipeline.errors import ConfigError, ExportError
from pipeline.runtime import pick_device
from pipeline.training.checkpoint import BEST, build_model, checkpoint_dir, load
from pipeline.grounded.vectors import POOLINGS, TokenFeatures, masked_pool, tokenize_texts


@dataclass
class Encoded:
    """What `encode` returns, padded to the longest input; padding rows are zero and masked out."""
    t: torch.Tensor               # (B, L, d_t + d_g) float32: [h; g] per token
    attention_mask: torch.Tensor  # (B, L) bool: real tokens, specials included
    offsets: torch.Tensor         # (B, L, 2) int64 character offsets into the input's text; (0, 0) for specials
    pooled: torch.Tensor          # (B, d_t + d_g) the sentence vector (the pooling the downstream heads use)
    input_ids: torch.Tensor       # (B, L) int64, padding 0
    token_type_ids: torch.Tensor  # (B, L) int64: 0 for the first text, 1 for the second of a pair
    truncated: list[bool]         # the input had more than max_length tokens and lost its tail
    d_t: int

    @property
    def h(self) -> torch.Tensor:
        """(B, L, d_t) the text encoder's states at the run's layer."""
        return self.t[..., : self.d_t]

    @property
    def g(self) -> torch.Tensor:
        """(B, L, d_g) the grounded embedding f_g(h)."""
        return self.t[..., self.d_t:]


def load_run_encoder(run_dir: Path, *, max_length: int, device="cpu", which: str = BEST,
                     compute_dtype: str | None = None) -> tuple[TextEncoder, nn.Module, dict]:
    """The run's own text encoder (model and layer from its config's extract section), its f_g and the
    checkpoint it came from (configuration, cache fingerprint, epoch, step)."""
    checkpoint = load(checkpoint_dir(run_dir) / which)
    ex = checkpoint["config"]["extract"]
    encoder = load_text_encoder(ex["text_model"], layer=ex["text_layer"], max_length=max_length, device=device,
                                compute_dtype=compute_dtype or ex["compute_dtype"])
    f_g = build_model(checkpoint).eval().f_g
    if f_g[0].in_features != encoder.dim:
        raise ConfigError(f"run {run_dir}: its f_g reads {f_g[0].in_features}-wide states but "
                          f"{ex['text_model']!r} gives {encoder.dim}")
    return encoder, f_g, checkpoint


class GroundedEncoder:
    """A text encoder and the f_g trained on its states, on one device, frozen."""

    def __init__(self, text: TextEncoder, f_g: nn.Module, *, pooling: str, info: dict | None = None):
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.text, self.pooling, self.info = text, pooling, dict(info or {})
        self.device = text.device
        self.features = TokenFeatures(text.dim, f_g.eval().to(self.device))
        self.d_t, self.d_g = text.dim, self.features.dim - text.dim

    @classmethod
    def from_run(cls, run_dir: Path, *, device="auto", checkpoint: str = BEST, pooling: str | None = None,
                 max_length: int | None = None, compute_dtype: str | None = None) -> "GroundedEncoder":
        """A trained run folder. Pooling and max_length default to params.yaml's downstream section, as the
        downstream probe reads them; the encoder, layer and compute dtype are the run's own."""
        from pipeline.config import resolve

        cfg = resolve()["downstream"]
        text, f_g, ckpt = load_run_encoder(run_dir, max_length=max_length or cfg["max_length"],
                                           device=pick_device(str(device)), which=checkpoint,
                                           compute_dtype=compute_dtype)
        return cls(text, f_g, pooling=pooling or cfg["pooling"],
                   info={"run": str(run_dir), "checkpoint": checkpoint, "epoch": ckpt["epoch"]})

    @classmethod
    def from_pretrained(cls, folder: Path, *, device="auto", pooling: str | None = None,
                        max_length: int | None = None, compute_dtype: str | None = None) -> "GroundedEncoder":
        """A folder written by `groundedbert export` (checked first: a bad folder is one ExportError line).
        Pooling, max_length and compute dtype default to what the export recorded."""
        from pipeline.grounded.folder import load_folder

        model, tokenizer, config = load_folder(folder)
        device = pick_device(str(device))
        model.text_model.eval().requires_grad_(False).to(device)
        text = TextEncoder(str(folder), tokenizer, model.text_model, layer=config.layer,
                           max_length=max_length or config.max_length, device=device,
                           compute_dtype=compute_dtype or config.compute_dtype)
        if text.tokenizer_sha256() != config.text_fingerprint["tokenizer_sha256"]:  # read_config requires it
            raise ExportError(f"file {Path(folder) / 'tokenizer.json'}: the tokenizer differs from the one the "
                              "export recorded in config.json (text_fingerprint.tokenizer_sha256); "
                              "altered after export?")
        return cls(text, model.f_g, pooling=pooling or config.pooling,
                   info={"folder": str(folder), **(config.source or {})})

    @property
    def dim(self) -> int:
        return self.d_t + self.d_g

    # The text encoder runs in inference_mode (TextEncoder.encode); what is returned is built under no_grad
    # instead, because inference tensors cannot feed a module being trained, the point of these vectors.
    @torch.no_grad()
    def encode(self, texts: list[str] | str, text_pairs: list[str] | None = None, *, batch_size: int = 32) -> Encoded:
        """Encode texts (or text pairs, as `[CLS] a [SEP] b [SEP]`), `batch_size` inputs per forward pass."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"text_pairs has {len(text_pairs)} entries for {len(texts)} texts")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        tok = tokenize_texts(texts, list(text_pairs) if text_pairs is not None else None, self.text.tokenizer,
                             self.text.max_length)
        items = [Tokens(ids, spans, cut, type_ids=types)
                 for ids, spans, cut, types in zip(tok.ids, tok.spans, tok.truncated, tok.type_ids)]
        n, width = len(items), max((len(i) for i in tok.ids), default=0)
        t = torch.zeros(n, width, self.dim, device=self.device)
        mask = torch.zeros(n, width, dtype=torch.bool, device=self.device)
        for batch in length_batches([len(i) for i in tok.ids], batch_size):
            states = self.text.encode([items[i] for i in batch])
            lengths = torch.tensor([len(s) for s in states])
            rows = torch.repeat_interleave(torch.tensor(batch), lengths).to(self.device)
            pos = torch.cat([torch.arange(k) for k in lengths.tolist()]).to(self.device)
            t[rows, pos] = self.features(torch.from_numpy(np.concatenate(states)).to(self.device))
            mask[rows, pos] = True
        pooled = masked_pool(t, mask, self.pooling) if n else t.new_zeros(0, self.dim)
        return Encoded(t=t, attention_mask=mask, offsets=_padded(tok.spans, width, 2).to(self.device), pooled=pooled,
                       input_ids=_padded(tok.ids, width).to(self.device),
                       token_type_ids=_padded(tok.type_ids, width).to(self.device), truncated=list(tok.truncated),
                       d_t=self.d_t)


def _padded(arrays: list[np.ndarray], width: int, *trailing: int) -> torch.Tensor:
    out = torch.zeros(len(arrays), width, *trailing, dtype=torch.int64)
    for row, a in enumerate(arrays):
        out[row, : len(a)] = torch.from_numpy(a.astype(np.int64))
    return out
