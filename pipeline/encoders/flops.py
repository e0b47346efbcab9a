"""Matmul FLOPs (2 x multiply-accumulates) of one image encoder forward, for the benchmark's peak fraction.

ViTs are counted analytically. With m patches, P prefix tokens, N = m + P tokens, width D, MLP hidden H,
patch p x p over C input channels and L blocks:

    patch embedding    2 * m * (C * p * p) * D
    per block          2 * N * D * 3D        qkv
                     + 2 * N * N * D         attention scores  q k^T (all heads together)
                     + 2 * N * N * D         attention x v
                     + 2 * N * D * D         output projection
                     + 2 * N * D * H * 2     MLP (fc1 and fc2)
    total              patch embedding + L * per block      (norms, softmax, GELU, adds not counted)

For a standard ViT (H = 4D) a block is 24 N D^2 + 4 N^2 D. DINOv2 ViT-S/14 at 224 px (m = 256, N = 257,
D = 384, L = 12): 12.25 GFLOPs per image. The linear terms are read off the block's nn.Linear shapes,
so SwiGLU or other MLP widths are counted as they are. Other models (CNNs) are counted by running one
forward under torch's FlopCounterMode, which counts the same operations (matmuls and convolutions).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def is_plain_vit(model: torch.nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("blocks", "patch_embed", "num_prefix_tokens")) and \
        all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in model.blocks)


def vit_flops(model: torch.nn.Module, num_patches: int) -> float:
    m, n = num_patches, num_patches + int(model.num_prefix_tokens)
    conv = model.patch_embed.proj
    c_in, ph, pw = conv.weight.shape[1], conv.weight.shape[2], conv.weight.shape[3]
    total = 2.0 * m * (c_in * ph * pw) * conv.weight.shape[0]
    for block in model.blocks:
        linear = sum(mod.in_features * mod.out_features
                     for mod in block.modules() if isinstance(mod, torch.nn.Linear))
        d_attn = block.attn.qkv.out_features // 3  # width of q (and of k, v)
        total += 2.0 * n * linear + 4.0 * n * n * d_attn
    return total


def counted_flops(model: torch.nn.Module, image_size: int, device, dtype: torch.dtype = torch.float32) -> float:
    """FLOPs of one forward_features at image_size, counted by torch (matmuls and convolutions);
    `dtype`: the weights' dtype (bfloat16 when the encoder casts them)."""
    x = torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype)
    # torch's counter does not see the CPU's fused attention kernel, so count timm attention unfused.
    fused = [(mod, mod.fused_attn) for mod in model.modules() if isinstance(getattr(mod, "fused_attn", None), bool)]
    try:
        for mod, _ in fused:
            mod.fused_attn = False
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.forward_features(x)
    finally:
        for mod, value in fused:
            mod.fused_attn = value
    return float(counter.get_total_flops())
