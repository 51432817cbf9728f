"""Learning quality against an outside reference: torch-rechub's models on protorec's rows.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_reference.py --config simulator
--dataset DIR --train A..B --test C..D [--models shared_bottom,mmoe,ple --epochs 1,2
--seeds 0,1,2 --set train.embedding_lr=0.2 --out FILE.md]``.

Both sides see exactly the same rows in the same order: the reference reads its batches
from protorec's own ``ContractLoader`` (one process, the same per-epoch shuffle), so ids
are already mapped to table rows and dense features normalised as the config says. The
reference is torch-rechub (https://github.com/datawhalechina/torch-rechub, a plain-PyTorch
research toolkit) as a user of it would train it: ``nn.Embedding`` tables of dim
``--ref-dim`` (16) for every sparse feature plus the scenario (its models have no scenario
input), its default initialisation, Adam 1e-3 on every parameter, BCE on click, the
config's batch size, its MLP sizes set to protorec's (bottom, experts, towers; its MLPs
put a BatchNorm after every Linear, protorec's do not: ``--ref-no-batchnorm`` drops them,
a one-factor diagnosis). protorec
trains through ``experiment.train_and_evaluate`` (one gloo rank), i.e. ``protorec
train``. Both are scored by the same ``prediction_metrics`` on ``--test`` days.

Watch-time mode: when the config has a watch head (``model.watch.head`` not "none", e.g.
``--config kuairand_watch``), protorec trains the backbone with the TR head (the head is set
to ``tr`` whatever the config names: TR is the head torch-rechub can express) and the
reference gets a second, "regression" task: its loss is ``click_weight`` x BCE on click
plus ``weight`` x MSE of its raw output on ``watch_ms / unit`` over the rows whose watch
time is observed, the unit being ``model.watch.scale_ms`` (or the row's duration with
``model.watch.target: ratio``), exactly TR's loss; its watch tower is sized as
``model.watch.hidden``, and its prediction is ``max(y, 0) x unit`` in ms, as TR's. The
table then shows XAUC, MAE (ms), click AUC and logloss.

torch-rechub is a benchmark-only dependency (requirements/bench.txt): protorec does not
import it. Tune on validation days and quote test days nobody tuned on (issue 11).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_rechub.basic.features import DenseFeature, SparseFeature
from torch_rechub.models.multi_task import MMOE, PLE, SharedBottom

from protorec.models.registry import build_watch_head
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.experiment import prediction_metrics, train_and_evaluate
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.variants import apply_overrides, parse_override, variant_config


def _inputs(config: ProtorecConfig, batch) -> dict[str, torch.Tensor]:
    """A protorec batch as torch-rechub's input dict: one (B,) tensor per feature."""
    x = {name: batch.sparse[name].values() for name in batch.sparse.keys()}
    x["scenario"] = batch.scenario
    for i, feature in enumerate(config.features.dense):
        x[feature.name] = batch.dense[:, i]
    return x


def _with_watch(config: ProtorecConfig) -> bool:
    """Whether the config trains watch time (the benchmark's watch-time mode)."""
    return config.model.watch.head != "none"


def reference_model(name: str, config: ProtorecConfig, dim: int) -> torch.nn.Module:
    """torch-rechub's ``name`` over protorec's features, its MLPs sized as protorec's.

    Outputs (B, 1): the click probability; in watch-time mode (B, 2), the second column the
    raw regression output (torch-rechub applies no activation to a "regression" task).
    """
    features = [SparseFeature(f.name, f.num_embeddings, dim) for f in config.features.sparse]
    features.append(SparseFeature("scenario", len(config.data.scenarios), dim))
    features += [DenseFeature(f.name) for f in config.features.dense]
    model = config.model
    tasks = ["classification"]
    tower = [{"dims": list(model.tower.hidden)}]
    if _with_watch(config):
        tasks.append("regression")
        tower.append({"dims": list(model.watch.hidden)})
    if name == "shared_bottom":
        return SharedBottom(features, tasks, {"dims": list(model.shared_bottom.hidden)}, tower)
    if name == "mmoe":
        return MMOE(
            features,
            tasks,
            model.mmoe.num_experts,
            {"dims": list(model.mmoe.expert_hidden)},
            tower,
        )
    if name == "ple":
        return PLE(
            features,
            tasks,
            model.ple.num_layers,
            max(1, model.ple.num_task_experts),
            model.ple.num_shared_experts,
            {"dims": list(model.ple.expert_hidden)},
            tower,
        )
    raise ValueError(f"torch-rechub has no {name!r} here (shared_bottom, mmoe, ple)")


def _drop_batchnorm(model: torch.nn.Module) -> None:
    """Swap every BatchNorm1d of ``model`` for an identity (torch-rechub's MLP has no switch)."""
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm1d):
                setattr(module, child_name, torch.nn.Identity())


def train_reference(
    name: str,
    config: ProtorecConfig,
    dataset: str,
    train: str,
    test: str,
    epochs: int,
    seed: int,
    dim: int,
    batchnorm: bool = True,
) -> dict:
    """Train torch-rechub's ``name`` on protorec's training rows; metrics on ``test``."""
    watch = config.model.watch
    # protorec's TR head (its tower unused) gives TR's exact loss on the observed rows and
    # its prediction; built before the seed so the reference's draws do not depend on it.
    tr = (
        build_watch_head(1, len(config.data.scenarios), config.model)
        if _with_watch(config)
        else None
    )
    torch.manual_seed(seed)
    model = reference_model(name, config, dim)
    if not batchnorm:
        _drop_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = ContractLoader(
        config, train, dataset_dir=dataset, rank=0, world_size=1, progress=False
    )
    t0, samples = time.perf_counter(), 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            out = model(_inputs(config, batch))
            loss = torch.nn.functional.binary_cross_entropy(out[:, 0], batch.click)
            if tr is not None:
                terms, _ = tr.losses(out[:, 1], batch)
                loss = watch.click_weight * loss + watch.weight * terms["watch"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            samples += batch.batch_size
    rate = samples / (time.perf_counter() - t0)
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    test_loader = ContractLoader(
        config, test, dataset_dir=dataset, rank=0, world_size=1, shuffle=False, progress=False
    )
    with torch.no_grad():
        for batch in test_loader:
            out = model(_inputs(config, batch))
            cols = {"click_prob": out[:, 0]}
            if tr is not None:
                cols["watch_pred_ms"] = tr.predict_ms(out[:, 1], batch.duration_ms)
            for key in ("scenario", "click", "watch_ms", "duration_ms", "user_id", "day"):
                cols[key] = getattr(batch, key)
            for key, value in cols.items():
                parts.setdefault(key, []).append(value.numpy())
    preds = {key: np.concatenate(v) for key, v in parts.items()}
    metrics = prediction_metrics(config, preds)
    metrics["train"] = {"samples_per_s": rate}
    return metrics


def _row(side: str, model: str, epochs: int, runs: list[dict], watch: bool) -> str:
    def stat(key: str) -> str:
        values = [key_of(r, key) for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        digits = 1 if key == "mae" else 4  # MAE in ms
        return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

    def key_of(run: dict, key: str) -> float:
        if key == "worst":
            # scenarios without rows on these days (KuaiRand's file has one) have no AUC
            return min(s["auc"] for s in run["per_scenario"].values() if s["auc"] is not None)
        return run["overall"][key]

    rate = statistics.mean(r["train"]["samples_per_s"] for r in runs)
    if watch:
        return (
            f"| {side} | {model} | {epochs} | {stat('xauc')} | {stat('mae')} | {stat('auc')} | "
            f"{stat('logloss')} | {rate:,.0f} |"
        )
    return (
        f"| {side} | {model} | {epochs} | {stat('auc')} | {stat('logloss')} | "
        f"{stat('worst')} | {rate:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simulator")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--train", required=True, help="training days A..B")
    parser.add_argument("--test", required=True, help="days scored (validation or test)")
    parser.add_argument("--models", default="shared_bottom,mmoe,ple")
    parser.add_argument("--epochs", default="1,2", help="comma-separated epoch counts")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ref-dim", type=int, default=16, help="reference embedding dim")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="protorec config override (repeatable)",
    )
    parser.add_argument(
        "--ref-no-batchnorm",
        action="store_true",
        help="the reference's MLPs without their BatchNorm layers (diagnosis)",
    )
    parser.add_argument("--skip", choices=["protorec", "reference"], default=None)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument(
        "--runs-json",
        type=Path,
        help="also write every run's metrics here (per scenario too), rewritten after each run",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    base = apply_overrides(load_config(args.config), [parse_override(s) for s in args.overrides])
    watch = _with_watch(base)
    if watch:
        base = apply_overrides(base, {"model.watch.head": "tr"}, source="watch-time mode")
    ctx = init_distributed("cpu")
    header = (
        "| side | model | epochs | XAUC | MAE (ms) | click AUC | logloss | samples/s |"
        if watch
        else "| side | model | epochs | AUC | logloss | worst-scenario AUC | samples/s |"
    )
    lines = [
        f"protorec ({' '.join(args.overrides) or 'shipped defaults'}"
        f"{', TR head' if watch else ''}) vs torch-rechub "
        f"(Adam 1e-3, dim {args.ref_dim}{', no BatchNorm' if args.ref_no_batchnorm else ''}); "
        f"train {args.train}, scored on {args.test}, seeds {args.seeds}",
        "",
        header,
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if watch else ""),
    ]
    print("\n".join(lines), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    records: list[dict] = []
    try:
        for name in args.models.split(","):
            for epochs in (int(e) for e in args.epochs.split(",")):
                for side in ("protorec", "torch-rechub"):
                    if args.skip == ("protorec" if side == "protorec" else "reference"):
                        continue
                    runs = []
                    for seed in seeds:
                        config = variant_config(base, name)
                        config = dataclasses.replace(
                            config,
                            train=dataclasses.replace(config.train, epochs=epochs, seed=seed),
                        )
                        if side == "protorec":
                            runs.append(
                                train_and_evaluate(
                                    config, args.dataset, args.train, args.test, ctx, progress=False
                                )
                            )
                        else:
                            runs.append(
                                train_reference(
                                    name,
                                    config,
                                    args.dataset,
                                    args.train,
                                    args.test,
                                    epochs,
                                    seed,
                                    args.ref_dim,
                                    not args.ref_no_batchnorm,
                                )
                            )
                        if args.runs_json:
                            record = {"side": side, "model": name, "epochs": epochs, "seed": seed}
                            records.append({**record, "metrics": runs[-1]})
                            args.runs_json.write_text(json.dumps(records, indent=1, default=str))
                    lines.append(_row(side, name, epochs, runs, watch))
                    print(lines[-1], flush=True)
    finally:
        shutdown_distributed()
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
