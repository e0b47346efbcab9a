"""Device, precision and seeding: the few lines every stage needs the same way."""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys

import numpy as np
import torch

from pipeline.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch of cached features on `device`; they travel in their storage dtype (half the bytes) and
    become float32 there."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    for k in ("h", "patches", "prefix"):
        out[k] = out[k].float()
    return out


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def autocast(device: torch.device, compute_dtype: str):
    """Autocast for reduced precision; a no-op for float32 (and for float16 on the CPU, which lacks kernels)."""
    dtype = torch_dtype(compute_dtype)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("compute_dtype float16 is not supported on the CPU; use bfloat16 or float32")
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's CPU threads set to `count` inside the block and given back after (0: left as they are).

    Why per part: the OT solver's sweeps are many small parallel loops, each ending at a barrier that waits
    for the slowest thread, so on a core another job holds they stall; the MLPs' big products do not."""
    before = torch.get_num_threads()
    if count <= 0 or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        use_deterministic_algorithms()


def use_deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True), without its import of torch._inductor.

    The public function imports torch._inductor's config only to copy the flag there, 2.3 s of every training
    and probe process on the build machine (bench/RESULTS.md, "Training speed"), whether or not anything is
    ever compiled. The flag itself is torch._C's; Inductor's copy is set here if Inductor is already loaded,
    and by `inductor_follows_determinism` before anything of ours compiles. On CPU tensors the flag matters too:
    the backward of indexing with a tensor (index_put_ with accumulate) is only deterministic with it."""
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None:   # another torch: the public way
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    set_flag(True, warn_only=True)
    inductor_follows_determinism()


def inductor_follows_determinism() -> None:
    """Copy torch's deterministic-algorithms flag into Inductor's config, if Inductor is loaded (what
    torch.use_deterministic_algorithms does). Call before torch.compile."""
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.deterministic = torch.are_deterministic_algorithms_enabled()


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the kernel at once.

    Why: by default each allocation above the mmap threshold (128 KiB, adapting up to 32 MiB) is mapped
    fresh and unmapped on free, so every large activation tensor of every forward pass is paid for again in
    page faults, the kernel zeroing each 4 KiB page on first touch. Kept, a process settles within a few
    batches into a heap that fits every temporary and stops faulting, so extraction runs faster
    (bench/RESULTS.md, "Memory reuse"). The price: resident memory stays near its peak until the process
    exits, and that peak grows a little (heap holes are never given back), which suits a batch job. PyTorch's
    CPU allocator goes through malloc, so this covers it. The setting is per process: forked DataLoader
    workers inherit it, spawned processes do not.
    Returns False where it does not apply (not Linux glibc, or another malloc preloaded), changing nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False  # glibc's mallopt would succeed on an allocator nobody uses
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other libcs
        return False
    # Never trim the heap's free top below 2 GiB (mallopt takes an int), and serve every allocation from the
    # heap, never from a mapping of its own.
    return bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)) and bool(mallopt(M_MMAP_MAX, 0))
