"""Benchmark of the multi-scenario models: parameters and CPU training-step time at batch 512.

Run: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_models.py [--batch 512
--steps 30 --threads 1]``. One step = forward + backward + Adam step over every parameter
(the embedding tables here are plain CPU tables, the same for every model), on the
simulator config's features with its default model sizes. For DistProto it also reports
the share of the step spent in the OT solver call, and in the whole transport step
(costs, ragged layout, solver). Target (issue 4): DistProto's step <= 1.25x MMoE's.
``--device cuda``: the model and batches on the GPU (plain tables, no sharding), each step
timed up to a ``torch.cuda.synchronize()``; not run yet (no GPU lent so far).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from protorec.models import distproto as distproto_module
from protorec.models.batch import Batch
from protorec.models.modules import prototype_transport
from protorec.pipeline.config import from_dict, to_dict
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.model_factory import build_model

#: name -> (model.name, overrides of the model section)
VARIANTS = {
    "shared_bottom": ("shared_bottom", {}),
    "mmoe": ("mmoe", {}),
    "ple": ("ple", {}),
    "star": ("star", {}),
    "distproto": ("distproto", {}),
    "gpdnet": ("distproto", {"gpd": True}),
    "distproto_balanced": ("distproto", {"ot": {"balanced": True}}),
}


def _config(base: dict, name: str, overrides: dict) -> ProtorecConfig:
    data = to_dict(from_dict(ProtorecConfig, base))
    data["model"]["name"] = name
    for key, value in overrides.items():
        if isinstance(value, dict):
            data["model"]["distproto"][key].update(value)
        else:
            data["model"]["distproto"][key] = value
    return from_dict(ProtorecConfig, data)


def _batch(config: ProtorecConfig, n: int, g: torch.Generator) -> Batch:
    """Random ids in every table, scenarios uniform, clicks at a 30% rate."""
    ids = [torch.randint(f.num_embeddings, (n,), generator=g) for f in config.features.sparse]
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=[f.name for f in config.features.sparse],
        values=torch.cat(ids),
        lengths=torch.ones(n * len(ids), dtype=torch.int32),
    )
    nan = torch.full((n,), float("nan"))
    return Batch(
        dense=torch.randn(n, len(config.features.dense), generator=g),
        sparse=sparse,
        scenario=torch.randint(len(config.data.scenarios), (n,), generator=g),
        click=(torch.rand(n, generator=g) < 0.3).float(),
        watch_ms=nan,
        duration_ms=nan,
        user_id=ids[0],
        day=torch.zeros(n, dtype=torch.long),
    )


class _Timer:
    """Wall time spent inside a wrapped function."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", default="simulator")
    parser.add_argument("--models", nargs="*", default=list(VARIANTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)

    def sync() -> None:  # a step's time is all of its queued device work
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.set_num_threads(args.threads)
    base = to_dict(load_config(args.config))
    print(
        f"batch={args.batch} steps={args.steps} threads={args.threads} config={args.config} "
        f"device={device}"
    )
    print(
        f"{'model':<20}{'dense params':>14}{'table params':>14}{'step ms (median)':>18}"
        f"{'mean':>8}{'OT solver':>11}{'transport':>11}{'OT iters':>10}"
    )
    step_ms = {}
    for variant in args.models:
        name, overrides = VARIANTS[variant]
        config = _config(base, name, overrides)
        torch.manual_seed(0)
        model = build_model(config, ebc_device="cpu").to(device)
        table_params = sum(p.numel() for p in model.sparse_arch.parameters())
        dense_params = sum(p.numel() for p in model.dense_arch.parameters())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        batches = [_batch(config, args.batch, g).to(device) for _ in range(8)]
        solver = _Timer(prototype_transport.solve_uot)
        balanced = _Timer(prototype_transport.solve_batch)
        prototype_transport.solve_uot, prototype_transport.solve_batch = solver, balanced
        arch = model.dense_arch
        transport = None
        if isinstance(arch, distproto_module.DistProtoArch):
            transport = _Timer(arch.transport)
            arch.transport = transport
        times, iters = [], []
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                solver.seconds = balanced.seconds = 0.0
                if transport is not None:
                    transport.seconds = 0.0
            sync()
            t0 = time.perf_counter()
            loss, out = model(batches[step % len(batches)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sync()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
                if "ot/n_iter" in out:
                    iters.append(float(out["ot/n_iter"]))
        prototype_transport.solve_uot = solver.fn
        prototype_transport.solve_batch = balanced.fn
        total = sum(times)
        median = statistics.median(times) * 1e3
        step_ms[variant] = median
        ot_share = f"{(solver.seconds + balanced.seconds) / total:.1%}" if transport else "-"
        tr_share = f"{transport.seconds / total:.1%}" if transport else "-"
        it = f"{statistics.mean(iters):.1f}" if iters else "-"
        print(
            f"{variant:<20}{dense_params:>14,}{table_params:>14,}{median:>18.1f}"
            f"{total / len(times) * 1e3:>8.1f}{ot_share:>11}{tr_share:>11}{it:>10}"
        )
    if "mmoe" in step_ms:
        for variant in ("distproto", "gpdnet", "distproto_balanced"):
            if variant in step_ms:
                ratio = step_ms[variant] / step_ms["mmoe"]
                print(f"{variant} / mmoe step time: {ratio:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
