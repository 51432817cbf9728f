"""Time protorec's batched OT solvers against loops of POT calls on the same problems.

Run from the repository root (about 30 s, plus ~15 s per --lam of the path)::

    OMP_NUM_THREADS=1 python benchmarks/bench_ot.py            # one CPU thread each side
    python benchmarks/bench_ot.py --device cuda                # where a GPU is present
    python benchmarks/bench_ot.py --path-512                   # + POT's path on 512 x 64 (minutes)

Problems: cosine costs ``1 - <x, p>`` between unit vectors (instances x, prototypes p,
dimension 32), uniform masses, as in the papers' alignment steps. Prints, per solver:
the time of one batched call (best of --repeat), of the POT loop, and how far each plan
is from a reference solved to 1e-12, so that the comparison is at equal accuracy; and the
cold UOT solve of a DistProto-sized batch at DistProto's settings (tol 1e-4).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from functools import partial

import numpy as np
import ot
import torch

from protorec.ot.l2_suot import l2_semirelaxed_objective, solve_l2_semirelaxed
from protorec.ot.uot import solve_uot


def problems(B: int, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Cosine costs between random unit vectors, uniform masses, float64 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.nn.functional.normalize(torch.randn(B, n, 32, generator=g, dtype=f64), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(B, k, 32, generator=g, dtype=f64), dim=-1)
    C = 1 - x @ p.transpose(-2, -1)
    return C, torch.full((B, n), 1 / n, dtype=f64), torch.full((B, k), 1 / k, dtype=f64)


def best_time(fn, repeat: int, device: str) -> tuple[float, object]:
    """Best wall time of fn() over repeat runs (after a warm-up), synchronising CUDA."""
    out = fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


def rel_err(plan: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest entry error relative to the largest reference entry, over the batch."""
    plan = plan.double().cpu()
    return float(((plan - ref).abs().amax((-2, -1)) / ref.abs().amax((-2, -1))).max())


def bench_uot(args: argparse.Namespace) -> None:
    B, n, k = 16, 512, 64
    C, a, b = problems(B, n, k)
    print(f"\n(1)/(2) entropic UOT, {B} x {n} x {k}, eps=0.05, reg_type=entropy")
    for tau_a, tau_b, name in ((1.0, 1.0, "UOT tau=(1, 1)"), (math.inf, 1.0, "semi-relaxed")):
        ref = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-12, check_every=1).plan
        pot = {}
        for method in ("sinkhorn", "sinkhorn_stabilized"):
            t, plans = best_time(
                partial(pot_loop, C, a, b, tau_a, tau_b, method), max(1, args.repeat // 2), "cpu"
            )
            pot[method] = t
            err = rel_err(torch.from_numpy(np.stack(plans)), ref)
            print(f"  {name:15s} POT {method:20s} loop: {t * 1e3:8.1f} ms  err {err:.1e}")
        pot_best = min(pot.values())
        for dtype in (torch.float64, torch.float32):
            Cd, ad, bd = (x.to(args.device, dtype) for x in (C, a, b))
            solve = partial(solve_uot, Cd, ad, bd, tau_a=tau_a, tau_b=tau_b)
            for tol, every in ((1e-5, 1), (1e-6, 1), (1e-6, 5)):
                t, res = best_time(
                    partial(solve, tol=tol, check_every=every), args.repeat, args.device
                )
                print(
                    f"  {name:15s} ours {str(dtype)[6:]:7s} tol={tol:.0e} check_every={every}: "
                    f"{t * 1e3:6.1f} ms  {res.n_iter:2d} it  err {rel_err(res.plan, ref):.1e}"
                    f"  x{pot_best / t:5.1f} vs best POT loop"
                )
            # Training: the next step's costs move a little; warm-start from this step.
            cold = solve(tol=1e-6, check_every=1)
            nudged = Cd + 1e-3 * torch.rand_like(Cd)
            t, res = best_time(
                partial(
                    solve_uot,
                    nudged,
                    ad,
                    bd,
                    tau_a=tau_a,
                    tau_b=tau_b,
                    tol=1e-6,
                    check_every=1,
                    warm_start=cold,
                ),
                args.repeat,
                args.device,
            )
            print(
                f"  {name:15s} ours {str(dtype)[6:]:7s} warm-started next step:       "
                f"{t * 1e3:6.1f} ms  {res.n_iter:2d} it  x{pot_best / t:5.1f}"
            )
    # DistProto's solves in training (configs/simulator.yaml): ~10 problems of ~230 x 64 a
    # step, float32, cold, tol 1e-4, check_every 2 (no POT ratio: not the same accuracy).
    C, a, b = (x.to(args.device, torch.float32) for x in problems(10, 230, 64, seed=3))
    t, res = best_time(
        partial(solve_uot, C, a, b, tol=1e-4, check_every=2), args.repeat, args.device
    )
    print(
        f"  DistProto-sized 10 x 230 x 64, float32, cold, tol=1e-4 check_every=2: "
        f"{t * 1e3:6.2f} ms  ({res.message.split(' (')[0]})"
    )


def pot_loop(C, a, b, tau_a, tau_b, method):
    """POT's entropic UOT, one call per problem, at its default stopThr=1e-6."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "reg_type = entropy overwrites c"
        return [
            ot.unbalanced.sinkhorn_unbalanced(
                a[i].numpy(),
                b[i].numpy(),
                C[i].numpy(),
                0.05,
                (tau_a, tau_b),
                reg_type="entropy",
                method=method,
                stopThr=1e-6,
            )
            for i in range(C.shape[0])
        ]


def path_objective(
    C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, lam: float
) -> tuple[float, float]:
    """POT's regularisation path on one problem: (seconds, objective of its plan)."""
    n, k = C.shape
    start = time.perf_counter()
    t, _, _ = ot.regpath.regularization_path(
        b.numpy(), a.numpy(), C.numpy().T, reg=1 / (2 * lam), semi_relaxed=True
    )
    seconds = time.perf_counter() - start
    plan = torch.from_numpy(t.reshape(k, n).T.copy())[None]
    return seconds, float(l2_semirelaxed_objective(plan, C[None], b[None], lam))


def bench_l2(args: argparse.Namespace) -> None:
    print("\n(3) L2 semi-relaxed OT (ProWTP eq. 8), exact: ours at tol=1e-8 (relative gap)")
    C, a, b = problems(1, 128, 64, seed=1)
    for lam in args.lam:
        seconds, best = path_objective(C[0], a[0], b[0], lam)
        Cd, ad, bd = (x.to(args.device) for x in (C, a, b))
        t, res = best_time(
            partial(solve_l2_semirelaxed, Cd, ad, bd, lam, tol=1e-8, check_every=1),
            args.repeat,
            args.device,
        )
        ours = float(l2_semirelaxed_objective(res.plan.cpu(), C, b, lam))
        print(
            f"  128 x 64 lam={lam:g}: POT path {seconds:6.2f} s | ours {t * 1e3:6.2f} ms "
            f"({res.n_iter} it), objective - path's: {(ours - best) / best:+.1e} relative"
            f"  x{seconds / t:6.0f}"
        )
    B, n, k, lam = 16, 512, 64, args.lam[0]
    C, a, b = problems(B, n, k, seed=2)
    Cd, ad, bd = (x.to(args.device) for x in (C, a, b))
    for every in (1, 5):
        t, res = best_time(
            partial(solve_l2_semirelaxed, Cd, ad, bd, lam, tol=1e-8, check_every=every),
            args.repeat,
            args.device,
        )
        gap = res.gap.cpu() / l2_semirelaxed_objective(res.plan.cpu(), C, b, lam)
        print(
            f"  {B} x {n} x {k} lam={lam:g} check_every={every}: ours {t * 1e3:6.1f} ms "
            f"({res.n_iter} it), max certified relative gap {float(gap.max()):.1e}"
        )
    ours = l2_semirelaxed_objective(res.plan.cpu().double(), C, b, lam)
    # POT's other L2 solvers cannot keep T 1 = a exact; the closest, L-BFGS-B with a large
    # L2 penalty on the rows (POT's half-squared L2: reg_m = 2 lam for our column term),
    # does not reach the QP's optimum: time two problems and report where it stops.
    start = time.perf_counter()
    for i in range(2):
        plan = ot.unbalanced.lbfgsb_unbalanced(
            a[i].numpy(),
            b[i].numpy(),
            C[i].numpy(),
            reg=0.0,
            reg_m=(1e6, 2 * lam),
            regm_div="l2",
            numItermax=10_000,
            stopThr=1e-12,
        )
        obj = float(
            l2_semirelaxed_objective(torch.from_numpy(plan)[None], C[i : i + 1], b[i : i + 1], lam)
        )
        viol = float(np.abs(plan.sum(1) - a[i].numpy()).max())
        print(
            f"    POT lbfgsb_unbalanced (rows penalised 1e6), problem {i}: objective - ours "
            f"{(obj - float(ours[i])) / float(ours[i]):+.1e} relative, |T1 - a| {viol:.1e}"
        )
    per = (time.perf_counter() - start) / 2
    print(f"    ... {per:.1f} s per problem, ~{per * B:.0f} s for the loop of {B}")
    if args.path_512:
        seconds, best = path_objective(C[0], a[0], b[0], lam)
        print(
            f"    POT path, problem 0: {seconds:.0f} s (~{seconds * B / 60:.0f} min for {B}), "
            f"objective - ours {(best - float(ours[0])) / float(ours[0]):+.1e} relative"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lam", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument(
        "--path-512",
        action="store_true",
        help="also time POT's path on one 512 x 64 problem (minutes)",
    )
    parser.add_argument("--skip-uot", action="store_true")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, POT {ot.__version__}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    if not args.skip_uot:
        bench_uot(args)
    bench_l2(args)


if __name__ == "__main__":
    main()
