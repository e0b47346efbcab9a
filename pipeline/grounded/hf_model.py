"""The exported grounded encoder as transformers knows models: a config class, a model class and its output.

`GroundedModel` holds the run's frozen text encoder (`text_model`, any BERT-family AutoModel) and its
`f_g` (the MLP of pipeline/modules.py); its forward takes what the tokenizer gives, like a BertModel's, and
returns `GroundedModelOutput`: `last_hidden_state` = [h; g] per token, `h`, `g` and `pooler_output` (the run's
pooling). `save_pretrained` writes both modules into one model.safetensors (`text_model.*`, `f_g.*`) beside
config.json, and `from_pretrained` reads them back with no network and no `trust_remote_code`: the classes
are this package's, registered with AutoConfig/AutoModel on import. GroundedEncoder (encoder.py) tokenises
texts, batches them by length and calls this forward. modules.StageTwoModules, the three MLPs stage two
trains (f_g, f_v, f_c), is another thing: the export keeps only its f_g.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from pipeline.grounded.vectors import masked_pool
from pipeline.modules import MLP
from pipeline.runtime import autocast

MODEL_TYPE = "groundedbert"
# Bumped whenever the folder's layout or a config field's meaning changes; a loader refuses other versions.
FORMAT_VERSION = 1


class GroundedConfig(PreTrainedConfig):
    """Everything needed to rebuild `[h; f_g(h)]` exactly as the run computed it, and where it came from."""

    model_type = MODEL_TYPE
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    text_config: PreTrainedConfig | dict | None = None
    format_version: int = FORMAT_VERSION
    layer: int = -1                  # hidden_states[layer] of the text encoder is h (0 = embeddings)
    pooling: str = "mean"            # the sentence vector, as the downstream heads pool (cls | mean)
    max_length: int = 128            # tokens per input (downstream.max_length of the exporting config)
    compute_dtype: str = "float32"   # the text encoder's autocast dtype when the run's cache was extracted
    d_t: int = 0                     # width of h (the text encoder's hidden size)
    d_g: int = 0                     # width of g = f_g(h)
    fg_hidden: int = 0               # f_g's hidden width
    fg_layernorm: bool = True        # f_g ends in a LayerNorm
    text_model_name: str = ""        # what the run loaded (e.g. offline:minilm), for the record
    text_fingerprint: dict | None = None    # TextEncoder.fingerprint() of the run's encoder at export
    fg_sha256: str | None = None            # state_dict_sha256(f_g) at export: f_g's weights, checked on load
    run_config: dict | None = None          # the source run's resolved configuration (config.json)
    cache_fingerprint: dict | None = None   # the identity of the feature cache f_g was trained on
    source: dict | None = None              # run folder, checkpoint file, epoch and step


@dataclass
class GroundedModelOutput(ModelOutput):
    """What GroundedModel.forward returns; every token field is zero at padding."""
    last_hidden_state: torch.FloatTensor | None = None   # (B, L, d_t + d_g): [h; g] per token
    pooler_output: torch.FloatTensor | None = None       # (B, d_t + d_g): the sentence vector (config.pooling)
    h: torch.FloatTensor | None = None                   # (B, L, d_t): the text encoder's states at config.layer
    g: torch.FloatTensor | None = None                   # (B, L, d_g): f_g(h)
    hidden_states: tuple[torch.FloatTensor, ...] | None = None   # the text encoder's, with output_hidden_states


class GroundedModel(PreTrainedModel):
    """text_model (frozen BERT-family encoder, no pooler) + f_g; forward gives [h; f_g(h)] per token."""

    config_class = GroundedConfig
    base_model_prefix = "grounded"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: GroundedConfig):
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config)
        if getattr(self.text_model, "pooler", None) is not None:
            # As load_text_encoder does: token states never pass through the pooler, so it is not exported.
            self.text_model.pooler = None
        self.f_g = MLP(config.d_t, config.fg_hidden, config.d_g, config.fg_layernorm)
        # BERT takes segment ids; DistilBERT and others have no such input
        self._takes_token_types = "token_type_ids" in inspect.signature(self.text_model.forward).parameters
        self.post_init()

    def _init_weights(self, module):
        # Every weight comes from the run; initialising them first would only cost time.
        pass

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> GroundedModelOutput | tuple:
        """h is hidden_states[config.layer] of the text encoder under the run's compute dtype, in float32;
        f_g reads the real tokens' rows only, in float32, as the probe applies it to cached states."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._takes_token_types:
            inputs["token_type_ids"] = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        with autocast(input_ids.device, self.config.compute_dtype):
            out = self.text_model(**inputs, output_hidden_states=True)
            h = out.hidden_states[self.config.layer].float()
        real = attention_mask.bool()
        h = h.masked_fill(~real[..., None], 0.0)
        g = h.new_zeros(*h.shape[:-1], self.config.d_g)
        g[real] = self.f_g(h[real])
        t = torch.cat([h, g], dim=-1)
        result = GroundedModelOutput(last_hidden_state=t, pooler_output=masked_pool(t, real, self.config.pooling),
                                     h=h, g=g, hidden_states=out.hidden_states if output_hidden_states else None)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()


AutoConfig.register(MODEL_TYPE, GroundedConfig, exist_ok=True)
AutoModel.register(GroundedConfig, GroundedModel, exist_ok=True)


def f_g_fields(dims: dict) -> dict:
    """GroundedConfig's f_g fields from a checkpoint's `dims` (modules.StageTwoModules.dims): the shape
    f_g was built with, not one read back from its layers."""
    return {"d_t": int(dims["d_t"]), "fg_hidden": int(dims["hidden"]), "d_g": int(dims["d_g"]),
            "fg_layernorm": bool(dims["layernorm"])}


def build(text_model: torch.nn.Module, f_g: torch.nn.Module, **fields) -> GroundedModel:
    """A GroundedModel holding copies of a loaded text encoder's and f_g's weights (loaded strictly, so a
    shape in `fields` that f_g does not have fails here). `fields`: the GroundedConfig fields, f_g_fields
    included."""
    text_config = text_model.config.to_dict()
    text_config.pop("_name_or_path", None)  # a path on the exporting machine (e.g. inside a wheel)
    model = GroundedModel(GroundedConfig(text_config=text_config, **fields))
    model.text_model.load_state_dict(text_model.state_dict(), strict=True)
    model.f_g.load_state_dict(f_g.state_dict(), strict=True)
    return model.eval()
