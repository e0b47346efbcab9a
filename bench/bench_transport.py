"""Speed of the batched partial OT solver on the training problem, against POT looped over the pairs.

    python bench/bench_transport.py            # the full run (about a minute on 2 CPU cores)
    python bench/bench_transport.py --quick    # 128 pairs of 20x256 only
    mkdir /tmp/old && git archive HEAD pipeline | tar -x -C /tmp/old
    python bench/bench_transport.py --quick --compare /tmp/old   # and old vs new, interleaved
    python bench/bench_transport.py --budget   # the iteration budget: fixed vs grown with spread / eps

The problem: eps = 0.05, s = 0.5, uniform marginals, float32, tol = 1e-6, costs 1 - cos(g_i, v_j)
between random 128-d token and patch vectors, each patch leaning towards one token (so the plan has
something to find). The floor: every sweep must read the kernel K (B x n x m float32) twice, once per
batched mat-vec; bytes x sweeps / time is the bandwidth the solver reaches, compared with a copy and
a sum measured here (a large tensor, so DRAM; and one the size of K, so cache, where K lives).
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
import time
from pathlib import Path

# POT's entropic solver multiplies 256x256 diagonal matrices through NumPy's OpenBLAS, whose threads
# made it up to 40x slower (CPU time) on this shared 2-core machine. One BLAS thread is POT at its
# best here, so the baseline is not flattered. Must be set before NumPy loads; torch is unaffected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.transport import partial_ot  # noqa: E402
from pipeline.transport.solver import ITERS_PER_SPREAD  # noqa: E402
from pipeline.transport.reference import primal_marginal_error  # noqa: E402

EPS, MASS, TOL, DIM = 0.05, 0.5, 1e-6, 128
CONFIGS = [(128, 20, 256), (128, 20, 196), (64, 20, 256), (512, 20, 256)]
CACHE = "cache-sized (2.6 MB, one K)"


def training_costs(batch, n, m, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n, DIM, generator=generator)
    leaning = torch.randint(0, n, (batch, m), generator=generator)
    patches = torch.randn(batch, m, DIM, generator=generator) + 0.5 * torch.gather(
        tokens, 1, leaning.unsqueeze(2).expand(-1, -1, DIM))
    cos = torch.nn.functional.normalize(tokens, dim=2) @ torch.nn.functional.normalize(patches, dim=2).transpose(1, 2)
    masks = torch.ones(batch, n, dtype=torch.bool), torch.ones(batch, m, dtype=torch.bool)
    return (1.0 - cos).to(device), masks[0].to(device), masks[1].to(device)


def best_time(run, repeats, sync=lambda: None):
    """Fastest wall time and fastest CPU time of `repeats` runs after one warm-up, and the last output.

    The machine is shared, so the minimum is the signal; CPU time (this process only) is the figure
    other people's load disturbs least, and for one thread it is what a quiet machine would show.
    """
    run()
    sync()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = run()
        sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), out


def memory_bandwidth(device="cpu"):
    """GB/s of a copy (read + write) and a sum (read), on a 256 MiB tensor and on one the size of K.

    On the CPU the best of 1 thread and all threads: another user's load on the shared machine can
    wreck either, and the floor should be what the hardware can do.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    found = {}
    for label, numel, repeats in (("dram", 64 * 2**20, 5), (CACHE, 128 * 20 * 256, 200)):
        src = torch.rand(numel, device=device)
        dst = torch.empty_like(src)
        copy = total = math.inf
        for count in ({threads, 1} if device == "cpu" else {threads}):
            torch.set_num_threads(count)
            copy = min(copy, best_time(lambda: dst.copy_(src), repeats, sync)[0])
            total = min(total, best_time(lambda: src.sum(), repeats, sync)[0])
        torch.set_num_threads(threads)
        found[label] = (2 * 4 * numel / copy / 1e9, 4 * numel / total / 1e9)
    return found


def machine():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"cpu: {model}; cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
            f"torch {torch.__version__}; POT {ot.__version__}; load average: {os.getloadavg()}")


def bench_fast(batch, n, m, device, repeats, tol=TOL, compiled=False):
    """partial_ot's best times; with `compiled`, the first call (the one-off compilation) timed apart."""
    cost, rows, cols = training_costs(batch, n, m, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    first = time.perf_counter()
    partial_ot(cost, rows, cols, MASS, EPS, tol=tol, compiled=compiled)
    sync()
    first = time.perf_counter() - first
    wall, cpu, result = best_time(lambda: partial_ot(cost, rows, cols, MASS, EPS, tol=tol, compiled=compiled), repeats, sync)
    bytes_per_sweep = 2 * batch * n * m * 4
    return dict(wall=wall, cpu=cpu, first=first, iterations=result.iterations, result=result,
                error=result.marginal_error.max().item(), gbs=bytes_per_sweep * result.iterations / wall / 1e9,
                converged=result.converged)


def load_solver(root):
    """partial_ot from another checkout of the project (say the last commit's), to time against this one.

    Its `pipeline` package is imported under the same name, then this checkout's modules are put back;
    the function keeps the other checkout's modules as its globals. Both layouts export it as
    `pipeline.transport.partial_ot` (a module before the package)."""
    ours = {name: module for name, module in sys.modules.items() if name == "pipeline" or name.startswith("pipeline.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(Path(root).resolve()))
    try:
        return importlib.import_module("pipeline.transport").partial_ot
    finally:
        sys.path.pop(0)
        for name in [n for n in sys.modules if n == "pipeline" or n.startswith("pipeline.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def compare(batch, n, m, other, repeats):
    """Best wall times of this partial_ot and `other`, called alternately (the machine is shared, so
    only times taken side by side compare), at all threads and at 1; and the largest cost difference."""
    cost, rows, cols = training_costs(batch, n, m)
    threads, found = torch.get_num_threads(), {}
    for count in (threads, 1):
        torch.set_num_threads(count)
        best = {"this": math.inf, "other": math.inf}
        outputs = {}
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, solver in (("this", partial_ot), ("other", other)):
                wall = time.perf_counter()
                outputs[name] = solver(cost, rows, cols, MASS, EPS, tol=TOL)
                if round_:
                    best[name] = min(best[name], time.perf_counter() - wall)
        found[count] = (best["this"], best["other"], outputs["this"].iterations, outputs["other"].iterations,
                        (outputs["this"].cost - outputs["other"].cost).abs().max().item())
    torch.set_num_threads(threads)
    return found


def bench_budget(batch, n, m, repeats):
    """Per eps, the training problem under a fixed 1000-sweep budget, under the budget solve_plan uses
    (ITERS_PER_SPREAD x spread / eps, at least 1000) and under that budget with eps-scaling, called
    alternately: best wall time, sweeps, the worst marginal error. At eps = 0.05 the first two differ only
    by the spread's one pass and host sync."""
    cost, rows, cols = training_costs(batch, n, m)
    spread = (cost.amax(dim=(1, 2)) - cost.amin(dim=(1, 2))).max().item()
    print(f"\n{batch} pairs of {n}x{m}, cost spread {spread:.2f}, s={MASS}, tol={TOL}, max_iter=1000, "
          f"{torch.get_num_threads()} thread(s), best of {repeats}, interleaved:")
    for eps in (0.05, 0.01, 0.002):
        budgets = {"fixed": (0, False), "grown": (ITERS_PER_SPREAD, False),
                   "grown, eps-scaled": (ITERS_PER_SPREAD, True)}
        best, results = {name: math.inf for name in budgets}, {}
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, (per_spread, scaled) in budgets.items():
                wall = time.perf_counter()
                results[name] = partial_ot(cost, rows, cols, MASS, eps, tol=TOL, max_iter=1000,
                                           iters_per_spread=per_spread, eps_scaling=scaled)
                if round_:
                    best[name] = min(best[name], time.perf_counter() - wall)
        for name in budgets:
            r = results[name]
            print(f"  eps={eps:<5} {name + ' budget:':25} {best[name] * 1e3:8.2f} ms, {r.iterations:5d} sweeps, "
                  f"converged {r.converged}, worst marginal error {r.marginal_error.max().item():.1e}")


def sweeps_per_spread():
    """What ITERS_PER_SPREAD rests on: sweeps to reach tol, divided by spread / eps, on random costs in [0, 1]
    (float32, one pair at a time, the budget unlimited), the worst over 4 seeds and 3 shapes per (s, eps)."""
    print("\nsweeps / (spread / eps) to converge, worst of 4 seeds x (12x49, 20x256, 5x9), random costs in [0, 1]:")
    for mass in (0.3, 0.5, 0.9):
        worst = {}
        for eps in (1e-3, 1e-2):
            for seed in range(4):
                for n, m in ((12, 49), (20, 256), (5, 9)):
                    generator = torch.Generator().manual_seed(seed)
                    cost = torch.rand(1, n, m, generator=generator, dtype=torch.float64)
                    rows, cols = torch.ones(1, n, dtype=torch.bool), torch.ones(1, m, dtype=torch.bool)
                    result = partial_ot(cost.float(), rows, cols, mass, eps, tol=TOL, max_iter=100_000)
                    ratio = (cost.max() - cost.min()).item() / eps
                    worst[eps] = max(worst.get(eps, 0.0), result.iterations / ratio)
        print(f"  s={mass}: " + ", ".join(f"eps={eps:g}: {value:.1f}" for eps, value in worst.items()))


def relative_cost_error(costs, batch, n, m, pairs):
    """|<T,C> - <T*,C>| / <T*,C> against the float64 solution converged to 1e-12, worst pair."""
    cost, rows, cols = training_costs(batch, n, m)
    exact = partial_ot(cost[:pairs].double(), rows[:pairs], cols[:pairs], MASS, EPS, tol=1e-12, max_iter=20000).cost
    return ((torch.as_tensor(costs[:pairs], dtype=torch.float64) - exact).abs() / exact).max().item()


def bench_pot(batch, n, m, pairs_entropic, repeats=3):
    cost, _, _ = training_costs(batch, n, m)
    cost = cost.double().numpy()
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)

    def exact_loop():
        for k in range(batch):
            ot.partial.partial_wasserstein(a, b, cost[k], m=MASS)

    exact_wall, exact_cpu, _ = best_time(exact_loop, repeats)
    pairs = min(pairs_entropic, batch)

    def entropic_loop():
        found = []
        for k in range(pairs):
            plan, log = ot.partial.entropic_partial_wasserstein(a, b, cost[k], EPS, m=MASS, stopThr=TOL, log=True)
            found.append((plan, 10 * (len(log["err"]) - 1) + 1))
        return found

    entropic_wall, entropic_cpu, found = best_time(entropic_loop, repeats)
    plans = torch.from_numpy(np.stack([plan for plan, _ in found]))
    error = primal_marginal_error(plans, torch.full((pairs, n), 1 / n, dtype=torch.float64),
                                  torch.full((pairs, m), 1 / m, dtype=torch.float64),
                                  torch.full((pairs,), MASS, dtype=torch.float64))
    return dict(exact_wall=exact_wall, exact_cpu=exact_cpu, entropic_wall=entropic_wall * batch / pairs,
                entropic_cpu=entropic_cpu * batch / pairs, entropic_pairs=pairs,
                entropic_iterations=float(np.mean([it for _, it in found])), entropic_error=error.max().item(),
                entropic_costs=(plans * torch.from_numpy(cost[:pairs])).sum(dim=(1, 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 128 pairs of 20x256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compare", type=Path, help="the root of another checkout, its solver timed against this one, interleaved")
    parser.add_argument("--budget", action="store_true", help="only the iteration budget's timings")
    parser.add_argument("--entropic-pairs", type=int, default=128,
                        help="POT entropic pairs timed per config; the rest extrapolated")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(machine())
    if args.budget:
        bench_budget(*CONFIGS[0], args.repeats)
        sweeps_per_spread()
        print(f"\nload average at the end: {os.getloadavg()}")
        return
    threads = torch.get_num_threads()
    bandwidth = memory_bandwidth()
    for label, (copy, total) in bandwidth.items():
        print(f"cpu memory bandwidth, {label}: copy {copy:.1f} GB/s, sum {total:.1f} GB/s")
    configs = CONFIGS[:1] if args.quick else CONFIGS
    print(f"\neps={EPS} s={MASS} tol={TOL} float32; partial_ot best of {args.repeats} runs, POT best of 3")
    other = load_solver(args.compare) if args.compare else None
    for batch, n, m in configs:
        if other is not None:
            for count, (this, that, its, other_its, diff) in compare(batch, n, m, other, args.repeats).items():
                print(f"\n{batch} pairs of {n}x{m}, {count} thread(s), interleaved: "
                      f"this {this * 1e3:.2f} ms ({its} sweeps), "
                      f"{args.compare} {that * 1e3:.2f} ms ({other_its} sweeps): {that / this:.2f}x; "
                      f"largest cost difference {diff:.1e}")
        runs = {}
        # Each shape compiled afresh, static, as a process solving only this shape would: after a shape
        # change torch.compile recompiles with dynamic shapes, slower per sweep (training's case, timed
        # by bench_epoch.py).
        torch._dynamo.reset()
        for compiled in (False, True):  # compiled at all threads first, so its compilation is timed there
            runs[compiled, threads] = bench_fast(batch, n, m, "cpu", args.repeats, compiled=compiled)
            torch.set_num_threads(1)
            runs[compiled, 1] = bench_fast(batch, n, m, "cpu", args.repeats, compiled=compiled)
            torch.set_num_threads(threads)
        pot = bench_pot(batch, n, m, args.entropic_pairs)
        pairs = pot["entropic_pairs"]
        extrapolated = "" if pairs == batch else f" (timed on {pairs} pairs, extrapolated)"
        print(f"\n{batch} pairs of {n}x{m}:")
        for compiled in (False, True):
            fast, single = runs[compiled, threads], runs[compiled, 1]
            label = "partial_ot compiled" if compiled else "partial_ot eager   "
            print(f"  {label}, {threads} threads {fast['wall'] * 1e3:8.2f} ms wall; {fast['iterations']} sweeps, "
                  f"marginal error {fast['error']:.1e} (KKT, L1), converged {fast['converged']}, relative cost error "
                  f"{relative_cost_error(fast['result'].cost, batch, n, m, pairs):.1e}"
                  + (f"; first call (compiling) {fast['first']:.1f} s" if compiled else ""))
            print(f"  {label}, 1 thread  {single['wall'] * 1e3:8.2f} ms wall, {single['cpu'] * 1e3:8.2f} ms CPU")
        print(f"  POT exact loop                     {pot['exact_wall'] * 1e3:8.2f} ms wall, {pot['exact_cpu'] * 1e3:8.2f} ms CPU")
        print(f"  POT entropic loop                  {pot['entropic_wall'] * 1e3:8.2f} ms wall, {pot['entropic_cpu'] * 1e3:8.2f} ms CPU"
              f"{extrapolated}; stopThr={TOL}: {pot['entropic_iterations']:.0f} iterations on average, primal marginal "
              f"error {pot['entropic_error']:.1e}, relative cost error "
              f"{relative_cost_error(pot['entropic_costs'], batch, n, m, pairs):.1e}")
        for compiled in (False, True):
            fast, single = runs[compiled, threads], runs[compiled, 1]
            best_wall = min(fast["wall"], single["wall"])
            label = "compiled" if compiled else "eager"
            print(f"  {label}: speed-up vs exact loop (target 10x) {pot['exact_wall'] / best_wall:.1f}x wall (best of 1 "
                  f"or {threads} threads), {pot['exact_cpu'] / single['cpu']:.1f}x CPU time at 1 thread; vs entropic "
                  f"loop (target 50x) {pot['entropic_wall'] / best_wall:.1f}x wall, "
                  f"{pot['entropic_cpu'] / single['cpu']:.1f}x CPU time at 1 thread")
            gbs = max(fast["gbs"], single["gbs"])
            print(f"  {label}: floor: K read twice per sweep = {2 * batch * n * m * 4 / 1e6:.2f} MB; reached {gbs:.1f} GB/s "
                  f"= {gbs / bandwidth['dram'][1]:.0%} of the DRAM sum, {gbs / bandwidth[CACHE][1]:.0%} of the "
                  f"cache-sized sum; {batch / best_wall:.0f} pairs/s")
    if torch.cuda.is_available():
        print(f"\ncuda: {torch.cuda.get_device_name()}")
        cuda_bandwidth = memory_bandwidth("cuda")
        for label, (copy, total) in cuda_bandwidth.items():
            print(f"cuda memory bandwidth, {label}: copy {copy:.1f} GB/s, sum {total:.1f} GB/s")
        dram_sum = cuda_bandwidth["dram"][1]
        for batch, n, m in configs:
            for compiled in (False, True):
                fast = bench_fast(batch, n, m, "cuda", args.repeats, compiled=compiled)
                print(f"  {batch} pairs of {n}x{m}, {'compiled' if compiled else 'eager'}: {fast['wall'] * 1e3:.2f} ms, {batch / fast['wall']:.0f} pairs/s, "
                      f"{fast['iterations']} sweeps, {fast['gbs']:.1f} GB/s = {fast['gbs'] / dram_sum:.1%} of the DRAM sum bandwidth")
    else:
        print("\ncuda: not available on this machine")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
