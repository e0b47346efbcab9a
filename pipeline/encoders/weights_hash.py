"""The hash of a torch module's weights (an encoder's fingerprint, f_g's record in an export): the same weights give
the same hash on any machine."""
from __future__ import annotations

import hashlib

import torch


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over the state dict in key order: each key, its dtype and shape, then its raw bytes.

    Raw bytes through a uint8 view, because numpy has no bfloat16; the key, dtype and shape go in too,
    so two layouts of the same bytes (a transpose, a renamed tensor) never hash alike."""
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
