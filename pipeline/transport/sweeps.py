"""The sweeps of the batched solver between two convergence checks, eager or through torch.compile.

`_sweep_block` is one pure function of tensors, so that torch.compile can turn ten sweeps into one
fused function (on the CPU, Inductor's C++ with two parallel loops per sweep) instead of a dozen
dispatched ops each, which makes a sweep faster (bench/RESULTS.md). The state it reads and returns is
`solver._DualState`'s; the math is in solver.py's docstring.
"""
from __future__ import annotations

import warnings

import torch

def _sweep_block(K, a, row_floor, u_cap_reached, b, v_cap, mass, padding_ones, Kc, w, steps: int, tiny: float):
    """`steps` Dykstra sweeps and the convergence check's numbers, as one pure function of tensors.

    Pure so that torch.compile can turn the whole block into one fused kernel per product (the
    eager sweep is a dozen small ops around the two mat-vecs, each costing more in dispatch than in
    arithmetic at training sizes). Kc = K c comes in already scaled; w is the mass scaling so far.
    Returns u, c, w, Kc for the next block, the (B,) marginal errors, [worst error, smallest and
    largest unpadded scaling] for the one host sync, and `kept` (see the end of the loop).
    """
    kept = []
    for _ in range(steps):
        # Row projection. Dykstra's correction undoes the previous row scaling first, which is
        # why u is recomputed from scratch and capped on the total dual, not multiplied.
        u = a / torch.maximum(Kc, row_floor)
        KTu = _row_times_kernel(u, K)
        # Column projection, capped the same way (on v alone).
        col_cap = v_cap * w
        c_raw = torch.minimum(b / KTu.clamp_min(tiny), col_cap)
        Kc = _kernel_times_column(K, c_raw)
        # The total-mass projection scales c by mass / <u, K c_raw>, the plan's mass; taken from
        # the n-long product it saves two m-long passes.
        scale = mass / (u * Kc).sum(dim=2, keepdim=True).clamp_min(tiny)
        Kc = Kc * scale
        w = w * scale
        # Returned, so stored once: otherwise Inductor inlines the divisions that make u and c_raw
        # into the next product's inner loop and recomputes them for every kernel entry (a division
        # per multiply-add). Free in eager mode.
        kept += [u, c_raw]
    c = c_raw * scale
    # The check: the L1 residual of partial OT's marginal optimality conditions. Row sums above a
    # count, and so do row sums below a on rows whose dual is active (< 0), where complementary
    # slackness says the row must be full; the same for columns. The total mass needs no term: the
    # last projection of every sweep makes it exact. Padded entries have a = 0 and sums 0. A capped
    # u or c_raw equals its cap exactly (the same division or product), hence the strict <.
    gaps = torch.cat([u * Kc - a, c * KTu - b], dim=2)
    active = torch.cat([u < u_cap_reached, c_raw < col_cap], dim=2)
    error = torch.where(active, gaps.abs(), gaps.clamp_min(0.0)).sum(dim=2).squeeze(1)
    scalings = torch.cat([u, c, w], dim=2) + padding_ones
    summary = torch.stack([error.max(), scalings.min(), scalings.max()])
    return u, c, w, Kc, error, summary, kept


def _row_times_kernel(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, 1, n) x (B, n, m) -> (B, 1, m). Eager: one bmm. Compiled: a broadcast product and a sum,
    which Inductor fuses with the ops around it, where a bmm would stay a separate library call."""
    if torch.compiler.is_compiling():
        return (u.mT * K).sum(dim=1, keepdim=True)
    return torch.bmm(u, K)


def _kernel_times_column(K: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, n, m) x (B, 1, m) -> (B, 1, n), as `_row_times_kernel` on the other side of K."""
    if torch.compiler.is_compiling():
        return (K * c).sum(dim=2).unsqueeze(1)
    return torch.bmm(c, K.mT)


_compiled_block = None


def block_function(compiled: bool):
    """The sweep block, compiled with torch.compile on first use when asked for, else eager.

    Shapes start static and become dynamic on the first change (torch.compile's default), so a
    training run compiles a few times at most. Where compilation fails (no C++ compiler for the
    CPU backend, say), a warning says why and the solver runs eagerly from then on: the same plans.
    """
    global _compiled_block
    if not compiled or _compiled_block is False:
        return _sweep_block
    if _compiled_block is None:
        import torch._inductor.config  # noqa: F401  (loaded here, where it is used: runtime.use_deterministic_algorithms)

        from pipeline.runtime import inductor_follows_determinism
        inductor_follows_determinism()
        _compiled_block = _guarded(torch.compile(_sweep_block, fullgraph=True))
    return _compiled_block


def _guarded(compiled_fn):
    def run(*args):
        global _compiled_block
        try:
            return compiled_fn(*args)
        except Exception as error:  # any compiler failure (an error of the sweeps themselves recurs eagerly)
            warnings.warn(f"partial_ot: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                          "running the solver eagerly", RuntimeWarning, stacklevel=3)
            _compiled_block = False
            return _sweep_block(*args)
    return run
