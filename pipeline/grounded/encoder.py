"""GroundedEncoder: texts -> h, g = f_g(h) and t = [h; g] per token, and one pooled vector per text.

    enc = GroundedEncoder.from_pretrained("exports/default", device="cpu")   # or .from_run("runs/default")
    out = enc.encode(["a small red circle left of a blue square"], batch_size=32)
    out.t, out.h, out.g, out.attention_mask, out.offsets, out.pooled

One path: texts are tokenised as the downstream probe tokenises them (vectors.tokenize_texts), sorted into
length batches (encoders.text.length_batches, the extraction runner's), and each batch goes through
GroundedModel.forward (hf_model.py), which a transformers user calls directly. The probe reads h back from
a float16 cache, so the two agree to float16 precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.encoders.text import TextEncoder, length_batches, load_text_encoder
from pipeline.errors import ConfigError, ExportError
from pipeline.grounded.hf_model import GroundedModel, build, f_g_fields
from pipeline.grounded.vectors import POOLINGS, tokenize_texts
from pipeline.runtime import pick_device
from pipeline.training.checkpoint import BEST, build_model, checkpoint_dir, load


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
    if checkpoint["dims"]["d_t"] != encoder.dim:
        raise ConfigError(f"run {run_dir}: its f_g reads {checkpoint['dims']['d_t']}-wide states but "
                          f"{ex['text_model']!r} gives {encoder.dim}")
    return encoder, f_g, checkpoint


class GroundedEncoder:
    """A GroundedModel and its tokenizer on one device, frozen; `text` is the text encoder's view of the same
    weights (tokenizer, layer, max_length, fingerprint)."""

    def __init__(self, text: TextEncoder, model: GroundedModel, *, info: dict | None = None):
        if model.config.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {model.config.pooling!r}")
        self.text, self.info = text, dict(info or {})
        self.device = text.device
        self.model = model.eval().requires_grad_(False).to(self.device)
        text.model = self.model.text_model   # one copy of the weights
        self.pooling = model.config.pooling
        self.d_t, self.d_g = model.config.d_t, model.config.d_g

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
        model = build(text.model, f_g, **f_g_fields(ckpt["dims"]), layer=text.layer, pooling=pooling or cfg["pooling"],
                      max_length=text.max_length, compute_dtype=text.compute_dtype)
        return cls(text, model, info={"run": str(run_dir), "checkpoint": checkpoint, "epoch": ckpt["epoch"]})

    @classmethod
    def from_pretrained(cls, folder: Path, *, device="auto", pooling: str | None = None,
                        max_length: int | None = None, compute_dtype: str | None = None) -> "GroundedEncoder":
        """A folder written by `groundedbert export` (checked first: a bad folder is one ExportError line).
        Pooling, max_length and compute dtype default to what the export recorded."""
        from pipeline.grounded.folder import load_folder

        model, tokenizer, config = load_folder(folder)
        device = pick_device(str(device))
        config = model.config
        config.pooling = pooling or config.pooling
        config.max_length = max_length or config.max_length
        config.compute_dtype = compute_dtype or config.compute_dtype
        model.text_model.eval().requires_grad_(False).to(device)
        text = TextEncoder(str(folder), tokenizer, model.text_model, layer=config.layer, max_length=config.max_length,
                           device=device, compute_dtype=config.compute_dtype)
        if text.tokenizer_sha256() != config.text_fingerprint["tokenizer_sha256"]:  # read_config requires it
            raise ExportError(f"file {Path(folder) / 'tokenizer.json'}: the tokenizer differs from the one the "
                              "export recorded in config.json (text_fingerprint.tokenizer_sha256); "
                              "altered after export?")
        return cls(text, model, info={"folder": str(folder), **(config.source or {})})

    @property
    def dim(self) -> int:
        return self.d_t + self.d_g

    # no_grad, not inference_mode: inference tensors cannot feed a module being trained, the point of these vectors.
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
        lengths = [len(ids) for ids in tok.ids]
        n, width = len(lengths), max(lengths, default=0)
        t = torch.zeros(n, width, self.dim, device=self.device)
        pooled = torch.zeros(n, self.dim, device=self.device)
        for batch in length_batches(lengths, batch_size):
            w = max(lengths[i] for i in batch)
            ids = _padded([tok.ids[i] for i in batch], w, fill=self.text.tokenizer.pad_token_id)
            types = _padded([tok.type_ids[i] for i in batch], w)
            mask = _padded([np.ones(lengths[i]) for i in batch], w)
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             token_type_ids=types.to(self.device))
            rows = torch.tensor(batch, device=self.device)
            t[rows, :w] = out.last_hidden_state
            pooled[rows] = out.pooler_output
        mask = torch.arange(width)[None, :] < torch.tensor(lengths, dtype=torch.int64).reshape(n, 1)
        return Encoded(t=t, attention_mask=mask.to(self.device), offsets=_padded(tok.spans, width, 2).to(self.device),
                       pooled=pooled, input_ids=_padded(tok.ids, width).to(self.device),
                       token_type_ids=_padded(tok.type_ids, width).to(self.device), truncated=list(tok.truncated),
                       d_t=self.d_t)


def _padded(arrays: list[np.ndarray], width: int, *trailing: int, fill: int = 0) -> torch.Tensor:
    out = torch.full((len(arrays), width, *trailing), fill, dtype=torch.int64)
    for row, a in enumerate(arrays):
        out[row, : len(a)] = torch.from_numpy(a.astype(np.int64))
    return out
