"""The exported grounded encoder as transformers knows models: a config class and a model class.

`GroundedModel` holds the run's frozen text encoder (`text_model`, any BERT-family AutoModel) and its
`f_g` (the MLP of pipeline/modules.py); `save_pretrained` writes both into one model.safetensors
(`text_model.*`, `f_g.*`) beside config.json, and `from_pretrained` reads them back with no network and no
`trust_remote_code`: the classes are this package's, registered with AutoConfig/AutoModel on import.
GroundedEncoder (encoder.py) is what users call; this is the storage format underneath.
"""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec

from pipeline.modules import MLP

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


class GroundedModel(PreTrainedModel):
    """text_model (frozen BERT-family encoder, no pooler) + f_g. The forward is GroundedEncoder.encode's job."""

    config_class = GroundedConfig
    base_model_prefix = "grounded"
    _supports_sdpa = True

    def __init__(self, config: GroundedConfig):
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config)
        if getattr(self.text_model, "pooler", None) is not None:
            # As load_text_encoder does: token states never pass through the pooler, so it is not exported.
            self.text_model.pooler = None
        self.f_g = MLP(config.d_t, config.fg_hidden, config.d_g, config.fg_layernorm)
        self.post_init()

    def _init_weights(self, module):
        # Every weight comes from the run; initialising them first would only cost time.
        pass


AutoConfig.register(MODEL_TYPE, GroundedConfig, exist_ok=True)
AutoModel.register(GroundedConfig, GroundedModel, exist_ok=True)


def build(text_model: torch.nn.Module, f_g: torch.nn.Module, **fields) -> GroundedModel:
    """A GroundedModel holding copies of a loaded text encoder's and f_g's weights (loaded strictly)."""
    first, last = f_g[0], f_g[2]
    text_config = text_model.config.to_dict()
    text_config.pop("_name_or_path", None)  # a path on the exporting machine (e.g. inside a wheel)
    config = GroundedConfig(text_config=text_config, d_t=first.in_features,
                            fg_hidden=first.out_features, d_g=last.out_features,
                            fg_layernorm=len(f_g) > 3 and isinstance(f_g[3], torch.nn.LayerNorm), **fields)
    model = GroundedModel(config)
    model.text_model.load_state_dict(text_model.state_dict(), strict=True)
    model.f_g.load_state_dict(f_g.state_dict(), strict=True)
    return model.eval()
