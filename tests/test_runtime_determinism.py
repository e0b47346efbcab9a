"""runtime.seed_everything turns on torch's deterministic algorithms (warn-only) without importing Inductor, and
Inductor's copy of the flag follows once something compiles."""
import subprocess
import sys

PROBE = """
import sys, torch
from pipeline.runtime import seed_everything, inductor_follows_determinism
seed_everything(0)
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      "torch._inductor.config" in sys.modules)
import torch._inductor.config as config
config.deterministic = False
inductor_follows_determinism()
print(config.deterministic)
"""


def test_the_flag_is_set_without_importing_inductor_and_inductor_follows_it():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "False", "True"]
