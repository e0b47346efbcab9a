"""What the bench scripts print first: the machine, its load, and its measured matrix-product peak."""
from __future__ import annotations

import contextlib
import os
import platform
import time

import torch

from pipeline.runtime import keep_freed_memory


def machine_info() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):  # no /proc/cpuinfo (macOS): keep platform's name
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"machine: {cpu}; {os.cpu_count()} cpus; torch {torch.__version__} with {torch.get_num_threads()} threads; "
            f"gpu: {gpu}; load average (1/5/15 min): {load}")


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int | None = None, seconds: float = 3.0) -> float:
    """Best sustained FLOP/s of one big square torch.mm in `dtype` (2 n^3 FLOPs per product).
    A GPU needs a far larger product than a CPU before it runs at its peak."""
    n = n or (8192 if device != "cpu" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: first call pays for kernel selection
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def add_malloc_flag(parser) -> None:
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is, to measure what keep_freed_memory buys (the groundedbert "
                             "command keeps freed memory: pipeline/runtime.py)")


def set_malloc(args) -> str:
    """As the groundedbert command does before any work, unless --default-malloc; says which, for the report."""
    if args.default_malloc:
        return "malloc: glibc default (freed memory returned to the kernel)"
    return "malloc: freed memory kept for reuse" if keep_freed_memory() else "malloc: as it was (not glibc)"
