"""Entropic partial optimal transport between a caption's tokens and its image's patches.

- solver.py: the batched solver (`partial_ot`), its iterations in sweeps.py, its input checks in checks.py;
- reference.py: POT, one pair at a time, the reference the solver is tested against (imported only on use);
- interface.py: what training and evaluation call: `solve_plan` by solver name, `ot_loss`, `ConvergenceTally`.

The method and the solver are described in docs/transport.md.
"""
from pipeline.transport.checks import TransportInputError
from pipeline.transport.interface import SOLVERS, ConvergenceTally, ot_loss, solve_plan
from pipeline.transport.solver import PartialOTResult, partial_ot

__all__ = ["SOLVERS", "ConvergenceTally", "PartialOTResult", "TransportInputError", "ot_loss", "partial_ot",
           "solve_plan"]
