"""torch.compile for the frozen image encoder: one fixed batch shape, weights frozen into the graph.

Why: on the CPU the eager ViT spends much of its time outside the matmul kernels (profile in bench/RESULTS.md):
addmm first copies the bias into its output, GELU, LayerNorm, layer scale and residual adds each make a
pass over memory. Inductor fuses those passes, and with `freezing` it treats the weights as constants,
so every Linear becomes a prepacked MKL / oneDNN kernel with its bias (and GELU) fused.

Why one shape: a new batch size means a new compilation (costly on a CPU, and frozen graphs bypass
Inductor's on-disk cache), so the encoder pads the last, short batch of a shard up to the
batch size it compiled for and drops the padded rows.

Compilation runs once, at load time, on a zero batch: if it fails (no C++ compiler, an operator Inductor
cannot lower) the encoder warns and stays eager, and its fingerprint says so before any shard is written.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

COMPILED = "inductor-frozen"  # what the encoder fingerprint records for a compiled forward


def _frozen():
    # A global Inductor flag, read when a graph is compiled; `torch.compile(options={"freezing": True})`
    # is not honoured (the weights stay graph inputs), so it is patched around each call instead.
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def compile_forward(forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
                    name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A compiled `forward` already run once on `example` (the shape it will always get), or None with a
    warning when compilation fails; the caller then keeps running `forward` eagerly."""
    compiled = torch.compile(forward, dynamic=False)

    def run(pixels: torch.Tensor) -> torch.Tensor:  # called under inference_mode
        if not pixels.is_inference():  # dynamo guards on the kind of tensor: a new kind would recompile
            pixels = pixels.clone()
        with _frozen():
            return compiled(pixels)

    try:
        with torch.inference_mode():  # as in encode(): freezing needs autograd off, and the same mode avoids a recompile
            run(example)
    except Exception as e:  # noqa: BLE001 - compilation fails in many ways (compiler missing, lowering); eager still works
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"image model {name!r}: torch.compile failed ({e.__class__.__name__}: {first[:300]}); "
                      "running it eagerly", RuntimeWarning, stacklevel=3)
        torch._dynamo.reset()  # drop the half-built state of the failed compilation (nothing else here compiles)
        return None
    return run


def in_fixed_batches(run: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """`run` over `pixels` in chunks of exactly `batch_size` rows (the last padded with zeros, its padded
    rows dropped), so a compiled forward never sees a new shape."""
    outs = []
    for start in range(0, pixels.shape[0], batch_size):
        chunk = pixels[start:start + batch_size]
        n = chunk.shape[0]
        if n < batch_size:
            chunk = torch.cat([chunk, chunk.new_zeros((batch_size - n, *chunk.shape[1:]))])
        outs.append(run(chunk)[:n])
    if not outs:  # an empty batch still gets the right trailing shape
        return run(pixels.new_zeros((batch_size, *pixels.shape[1:])))[:0]
    return outs[0] if len(outs) == 1 else torch.cat(outs)
