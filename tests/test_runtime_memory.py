"""keep_freed_memory: a freed tensor's memory is reused by the next one without fresh pages from the kernel.

Each case runs in its own interpreter, because the malloc setting is process-wide and cannot be undone."""
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from pipeline.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
x, w = torch.randn(32 * 257, 384), torch.randn(384, 1536)

def block():  # the shapes of a ViT-S MLP at batch 32: two 50 MB temporaries, beyond every mmap threshold
    h = x @ w
    return (torch.nn.functional.gelu(h)[:, :384] + x).sum()

for _ in range(10):  # the heap settles into a layout that fits every temporary
    block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    kept, faults = out.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_tensors_are_reused_without_page_faults():
    kept, faults = _faults("keep")
    assert kept == "True"
    _, default_faults = _faults("default")
    # 50 MB is 12 300 pages of 4 KiB: the default maps each temporary afresh (a fault a page), kept memory is reused.
    assert default_faults > 5 * 12_000, default_faults
    assert faults < 1000, faults


def test_every_command_runs_with_it(monkeypatch):
    from typer.testing import CliRunner

    import stages.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    r = CliRunner().invoke(cli.app, ["cache", "info", "/nonexistent-cache-dir"])
    assert calls == [1], r.output
