"""The side-by-side quality benchmark behind ``protorec compare``.

Every model variant (``pipeline/variants.py``) is trained with every seed on the same
training days and evaluated on the same test days (:func:`train_and_evaluate`). Each
finished run is written at once to ``OUT/runs/<variant>__seed<s>.json``, so a compare that
crashed or was stopped starts again where it was: finished runs are skipped (and the log
says so), and a second invocation with more variants into the same ``OUT`` adds them to
the tables. Runs of one variant are averaged only when they ran on the same world size
and device (:func:`check_same_environment`). The aggregate over every run in ``OUT`` goes
to ``compare.json``, ``compare.md`` (each figure the mean ± sample standard deviation over
seeds, the oracle beside) and ``compare.png`` (per-scenario AUC per model, with error
bars; watch-time MAE and XAUC when watch heads were compared).

Layout of ``OUT``::

    runs/<variant>__seed<s>.json   one run: variant, seed, wall time, data, where it ran
                                   (world size, torch threads, device, code version),
                                   config, metrics
    compare.json                   the aggregate (settings, per-model figures, oracle)
    compare.md                     the Markdown tables
    compare.png                    the chart
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from protorec.pipeline.config import ConfigError, to_dict
from protorec.pipeline.distributed import DistContext
from protorec.pipeline.experiment import oracle_metrics, train_and_evaluate
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.provenance import code_version
from protorec.pipeline.variants import VARIANTS, apply_overrides, variant_config

log = logging.getLogger(__name__)

#: Figures of the ``overall`` block aggregated over seeds: (key, Markdown header).
CLICK_FIGURES = (("auc", "AUC"), ("gauc", "GAUC"), ("ndcg@10", "NDCG@10"), ("logloss", "logloss"))
WATCH_FIGURES = (("mae", "MAE (ms)"), ("rmse", "RMSE (ms)"), ("xauc", "XAUC"), ("xgauc", "XGAUC"))


@dataclass(frozen=True)
class Run:
    """One (variant, seed) cell of a compare."""

    variant: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.variant}__seed{self.seed}"


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
    os.replace(tmp, path)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two configs' plain data.

    Keys present on one side only are not differences: they are sections that a newer
    protorec added (or dropped) with defaults, which do not change a finished run.

    >>> config_differences({"train": {"seed": 0, "epochs": 1}}, {"train": {"seed": 1}})
    ['train.seed']
    """
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def run_config(base: ProtorecConfig, run: Run) -> ProtorecConfig:
    """The config of one run: ``base`` turned into the variant, ``train.seed`` = the seed."""
    config = variant_config(base, run.variant)
    return apply_overrides(config, {"train.seed": run.seed}, source=f"run {run.run_id}")


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) of the defined values (None skipped).

    ``std`` is None with fewer than two defined values; ``n`` counts the defined values.

    >>> mean_std([0.7, 0.8, None])
    {'mean': 0.75, 'std': 0.07071067811865482, 'n': 2}
    """
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(defined)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def _run_figures(record: dict) -> dict[str, float | None]:
    """The figures of one run that the tables aggregate, by dotted name."""
    m = record["metrics"]
    figures: dict[str, float | None] = {"wall_s": record["wall_s"]}
    if "train" in m:
        figures["samples_per_s"] = m["train"].get("samples_per_s")
    figures.update(_metrics_figures(m))
    return figures


def _metrics_figures(m: dict) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for key, _ in CLICK_FIGURES + WATCH_FIGURES:
        if key in m["overall"]:
            figures[f"overall.{key}"] = m["overall"][key]
    figures["worst_scenario_auc"] = m["worst_scenario_auc"]
    for name, block in m["per_scenario"].items():
        figures[f"per_scenario.{name}.auc"] = block["auc"]
        if "xauc" in block:
            figures[f"per_scenario.{name}.xauc"] = block["xauc"]
    return figures


#: Fields of a run's ``environment`` that must agree among the seeds of one variant: a
#: figure averaged over runs on different world sizes (another global batch, other
#: shards) or devices (other kernels) mixes two experiments.
SAME_ENVIRONMENT = ("world_size", "device")


def run_environment(ctx: DistContext) -> dict[str, Any]:
    """Where a run ran: world size, torch threads per process, device type, code version."""
    return {
        "world_size": ctx.world_size,
        "torch_threads": torch.get_num_threads(),
        "device": ctx.device.type,
        "code_version": code_version(),
    }


def check_same_environment(
    variant: str, records: Sequence[dict], here: dict[str, Any] | None = None
) -> None:
    """Refuse to average ``variant``'s runs when they differ in :data:`SAME_ENVIRONMENT`.

    Records without an ``environment`` (written before protorec recorded it) are not
    checked: nothing says where they ran.

    Args:
        variant: the variant of ``records``.
        records: its finished runs.
        here: :func:`run_environment` of a compare about to add runs: checked before
            any training, rather than after hours of it.

    Raises:
        ConfigError: naming the field, the values and the run files.
    """
    known = [r for r in records if "environment" in r]
    for field in SAME_ENVIRONMENT:
        values = {r["environment"][field] for r in known} | ({here[field]} if here else set())
        if len(values) > 1:
            where = [
                f"runs/{Run(r['variant'], r['seed']).run_id}.json "
                f"({field} {r['environment'][field]})"
                for r in known
            ]
            if here:
                where.append(f"this compare ({field} {here[field]})")
            raise ConfigError(
                variant,
                field,
                f"its runs differ ({', '.join(where)}): not "
                "averaged; redo them alike (delete the odd ones and resume) "
                "or use another --out",
            )


def aggregate(records: Sequence[dict], oracle: dict | None, settings: dict) -> dict:
    """Per variant, each figure's mean and spread over its seeds; the oracle beside.

    Args:
        records: run records (``runs/*.json``), any order.
        oracle: :func:`oracle_metrics` of the test days, or None.
        settings: what the runs share (data set, days), stored as they are.

    Raises:
        ConfigError: a variant's runs ran on different world sizes or devices
            (:func:`check_same_environment`).
    """
    by_variant: dict[str, list[dict]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    for variant, runs in by_variant.items():
        check_same_environment(variant, runs)
    # The registry's order (baselines, then DistProto and its ablations), then any other.
    order = [v for v in VARIANTS if v in by_variant] + sorted(set(by_variant) - set(VARIANTS))
    models = {}
    for variant in order:
        runs = sorted(by_variant[variant], key=lambda r: r["seed"])
        per_run = [_run_figures(r) for r in runs]
        keys = list(dict.fromkeys(k for f in per_run for k in f))
        models[variant] = {
            "seeds": [r["seed"] for r in runs],
            # Only scenarios with test rows: a data set's scenario list may name codes
            # that never occur in the evaluated days (no AUC, an empty column).
            "scenarios": [
                name
                for name in runs[0]["metrics"]["per_scenario"]
                if any(r["metrics"]["per_scenario"].get(name, {}).get("samples", 1) for r in runs)
            ],
            "figures": {
                k: {**mean_std([f.get(k) for f in per_run]), "values": [f.get(k) for f in per_run]}
                for k in keys
            },
        }
    return {
        "settings": settings,
        "models": models,
        "oracle": None
        if oracle is None
        else {
            "figures": _metrics_figures(oracle),
            "metrics": oracle,
        },
    }


def _cell(stat: dict | None, fmt: str) -> str:
    if stat is None or stat["mean"] is None:
        return "n/a"
    text = fmt.format(stat["mean"])
    if stat["std"] is not None:
        text += " ± " + fmt.format(stat["std"])
    return text


def _oracle_cell(oracle: dict | None, key: str, fmt: str) -> str:
    value = None if oracle is None else oracle["figures"].get(key)
    return "n/a" if value is None else fmt.format(value)


def summary_markdown(summary: dict) -> str:
    """The aggregate as Markdown tables: click figures, per-scenario AUC, watch figures."""
    settings, models, oracle = summary["settings"], summary["models"], summary["oracle"]
    scenarios = next(iter(models.values()))["scenarios"] if models else []
    oracle_auc = 0.5 if oracle is None else oracle["figures"].get("overall.auc") or 0.5
    # The headroom: how much of the oracle's AUC lift over chance (0.5) a model takes.
    lift = oracle_auc > 0.5
    lines = [
        f"Trained on {settings['train_days']}, evaluated on {settings['test_days']} "
        f"(data set `{settings['dataset']}`). Each figure: mean ± sample standard "
        "deviation (n - 1) over the seeds; seed s sets `train.seed`. Wall time: training "
        "and evaluation of one run."
        + (" Of oracle lift: (AUC - 0.5) / (oracle AUC - 0.5)." if lift else ""),
        "",
        "| model | seeds | AUC | "
        + ("of oracle lift | " if lift else "")
        + "GAUC | NDCG@10 | logloss | worst-scenario AUC | train samples/s | wall s / run |",
        "|---|---:|---:|" + ("---:|" if lift else "") + "---:|---:|---:|---:|---:|---:|",
    ]
    for variant, m in models.items():
        f = m["figures"]
        cells = [_cell(f.get(f"overall.{k}"), "{:.4f}") for k, _ in CLICK_FIGURES]
        if lift:
            auc = f.get("overall.auc", {}).get("mean")
            share = "n/a" if auc is None else f"{(auc - 0.5) / (oracle_auc - 0.5):.1%}"
            cells.insert(1, share)
        cells += [
            _cell(f.get("worst_scenario_auc"), "{:.4f}"),
            _cell(f.get("samples_per_s"), "{:.0f}"),
            _cell(f.get("wall_s"), "{:.0f}"),
        ]
        lines.append(f"| {variant} | {len(m['seeds'])} | " + " | ".join(cells) + " |")
    if oracle is not None:
        cells = [_oracle_cell(oracle, f"overall.{k}", "{:.4f}") for k, _ in CLICK_FIGURES]
        if lift:
            cells.insert(1, "100%")
        cells.append(_oracle_cell(oracle, "worst_scenario_auc", "{:.4f}"))
        lines.append("| oracle | - | " + " | ".join(cells) + " | - | - |")
    lines += [
        "",
        "Per-scenario AUC:",
        "",
        "| model | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    for variant, m in models.items():
        cells = [_cell(m["figures"].get(f"per_scenario.{s}.auc"), "{:.4f}") for s in scenarios]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if oracle is not None:
        cells = [_oracle_cell(oracle, f"per_scenario.{s}.auc", "{:.4f}") for s in scenarios]
        lines.append("| oracle | " + " | ".join(cells) + " |")
    watch_models = {v: m for v, m in models.items() if "overall.xauc" in m["figures"]}
    if watch_models:
        lines += [
            "",
            "Watch time (rows where it is observed):",
            "",
            "| model | " + " | ".join(h for _, h in WATCH_FIGURES) + " |",
            "|---|" + "---:|" * len(WATCH_FIGURES),
        ]
        for variant, m in watch_models.items():
            cells = [
                _cell(m["figures"].get(f"overall.{k}"), "{:.1f}" if "ms" in h else "{:.4f}")
                for k, h in WATCH_FIGURES
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        if oracle is not None and "overall.xauc" in oracle["figures"]:
            cells = [
                _oracle_cell(oracle, f"overall.{k}", "{:.1f}" if "ms" in h else "{:.4f}")
                for k, h in WATCH_FIGURES
            ]
            lines.append("| oracle | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _title_data(settings: dict) -> str:
    """The data set's folder name and the days: what a chart was computed on."""
    return (
        f"{Path(settings['dataset']).name}, train {settings['train_days']}, "
        f"test {settings['test_days']}"
    )


def _bars(
    ax, models: dict, oracle: dict | None, groups: list[str], colors: dict[str, str]
) -> tuple[float, float]:
    """One bar per model and group (mean ± std), the oracle as a tick; the values' range."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(models))
    lows, highs = [], []
    for i, (variant, m) in enumerate(models.items()):
        stats = [m["figures"].get(g) or {"mean": None, "std": None} for g in groups]
        means = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
        # No bar of spread from one seed (NaN draws none).
        stds = np.array([np.nan if s["std"] is None else s["std"] for s in stats])
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            means,
            width,
            yerr=stds,
            capsize=2,
            label=variant,
            color=colors[variant],
        )
        spread = np.nan_to_num(stds)
        lows.append(np.nanmin(means - spread) if np.isfinite(means).any() else np.nan)
        highs.append(np.nanmax(means + spread) if np.isfinite(means).any() else np.nan)
    if oracle is not None:
        values = np.array([oracle["figures"].get(g) or np.nan for g in groups], dtype=float)
        if np.isfinite(values).any():
            ax.hlines(
                values, x - 0.42, x + 0.42, colors="black", linewidths=2, label="oracle", zorder=3
            )
            lows.append(np.nanmin(values))
            highs.append(np.nanmax(values))
    finite_lows = [v for v in lows if math.isfinite(v)]
    finite_highs = [v for v in highs if math.isfinite(v)]
    if not finite_lows:
        return math.nan, math.nan
    return min(finite_lows), max(finite_highs)


def _from_chance(ax, low: float, high: float) -> None:
    """A rank figure's (AUC, XAUC) axis from 0.5, chance, drawn as a dashed line."""
    top = 1.0 if not math.isfinite(high) else min(1.0, high + 0.1 * (high - 0.5) + 0.01)
    bottom = 0.5 if not math.isfinite(low) else min(0.5, low - 0.01)
    ax.set_ylim(bottom, max(top, 0.51))
    # Above the spine it lies on.
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1.5, label="chance (0.5)", zorder=3)


def scenario_figure(summary: dict):
    """The compare chart as a matplotlib Figure (written by :func:`plot_scenario_auc`).

    Click AUC overall and per scenario (the scenarios with test rows), one bar per model
    (± std over seeds), the oracle as a black tick, the axis from 0.5 with a dashed chance
    line. When watch heads were compared, two panels beside it: watch-time MAE (axis
    from 0) and XAUC (from 0.5) per model.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training node
    import matplotlib.pyplot as plt

    models, oracle = summary["models"], summary["oracle"]
    scenarios = next(iter(models.values()))["scenarios"] if models else []
    watch = {v: m for v, m in models.items() if "overall.xauc" in m["figures"]}
    groups = ["overall.auc"] + [f"per_scenario.{s}.auc" for s in scenarios]
    # Wide enough for the title's data set and days.
    width = min(14.0, max(7.5, 4.0 + 0.22 * len(groups) * len(models)))
    if watch:
        fig, axes = plt.subplots(
            1, 3, figsize=(width + 6.0, 4.5), gridspec_kw={"width_ratios": [width, 3, 3]}
        )
    else:
        fig, axes = plt.subplots(figsize=(width, 4.5))
        axes = [axes]
    ax = axes[0]
    # A model keeps its colour in every panel.
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {v: cycle[i % len(cycle)] for i, v in enumerate(models)}
    _from_chance(ax, *_bars(ax, models, oracle, groups, colors))
    ax.set_xticks(np.arange(len(groups)), ["overall", *scenarios])
    ax.set_ylabel("AUC (mean ± std over seeds)")
    ax.set_title("click AUC per scenario")
    ax.grid(axis="y", alpha=0.3)
    if watch:
        watch_oracle = (
            oracle if oracle is not None and "overall.xauc" in oracle["figures"] else None
        )
        for ax_w, key, label in (
            (axes[1], "mae", "watch-time MAE (ms)"),
            (axes[2], "xauc", "watch-time XAUC"),
        ):
            low, high = _bars(ax_w, watch, watch_oracle, [f"overall.{key}"], colors)
            if key == "xauc":
                _from_chance(ax_w, low, high)
            else:
                ax_w.set_ylim(0.0, 1.1 * high if math.isfinite(high) and high > 0 else 1.0)
            ax_w.set_xticks([0], ["overall"])
            ax_w.set_title(label)
            ax_w.grid(axis="y", alpha=0.3)
    fig.suptitle(_title_data(summary["settings"]))
    # One legend below the panels: the click panel names every model, oracle and chance.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", loc="lower center", ncol=min(6, len(labels)))
    rows = -(-len(labels) // 6)
    fig.tight_layout(rect=(0.0, min(0.3, 0.07 * rows), 1.0, 1.0))
    return fig


def plot_scenario_auc(summary: dict, path: Path) -> None:
    """Write :func:`scenario_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = scenario_figure(summary)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _settings(dataset: str | Path, train_days: str, test_days: str) -> dict:
    return {
        "dataset": str(Path(dataset).resolve()),
        "train_days": train_days,
        "test_days": test_days,
    }


def load_runs(out: Path) -> list[dict]:
    """The run records in ``out/runs`` (a file left half-written cannot exist: atomic)."""
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def pending_runs(out: Path, base: ProtorecConfig, runs: Sequence[Run], settings: dict) -> list[Run]:
    """The runs still to do; a finished one must match this compare's data and config.

    Raises:
        ConfigError: a record in ``out`` was made on other data or days, or with another
            config for the same variant and seed (a new ``--out`` is then needed).
    """
    done: dict[tuple[str, int], dict] = {}
    for record in load_runs(out):
        other = {k: record[k] for k in settings}
        if other != settings:
            raise ConfigError(
                str(out),
                f"runs/{record['variant']}__seed{record['seed']}",
                f"made with {other}, not {settings}: use another --out",
            )
        done[(record["variant"], record["seed"])] = record
    todo: list[Run] = []
    for run in runs:
        finished = done.get((run.variant, run.seed))
        if finished is None:
            todo.append(run)
            continue
        diff = config_differences(finished["config"], to_dict(run_config(base, run)))
        if diff:
            raise ConfigError(
                str(out),
                f"runs/{run.run_id}",
                f"finished with another config ({', '.join(diff[:5])} differ): "
                "use another --out, or delete that run to redo it",
            )
    return todo


def write_outputs(out: Path, summary: dict) -> dict[str, Path]:
    """compare.json, compare.md and compare.png of ``summary`` in ``out``."""
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    _write_json(paths["json"], summary)
    paths["md"].write_text(summary_markdown(summary))
    plot_scenario_auc(summary, paths["png"])
    return paths


def run_compare(
    base: ProtorecConfig,
    variants: Sequence[str],
    seeds: int,
    dataset: str | Path,
    train_days: str,
    test_days: str,
    out: str | Path,
    ctx: DistContext,
    progress: bool = False,
    train: bool = True,
    runs_bar: bool = False,
) -> dict | None:
    """Train and evaluate every (variant, seed) not yet in ``out``; aggregate all of ``out``.

    Every rank trains; rank 0 alone reads the finished runs, writes the files and returns
    the aggregate (the other ranks return None). Several compares may share one ``out``
    (each skips the runs the others finished before it reaches them).

    Args:
        base: the config every variant starts from (``--set`` already applied).
        variants: names in :data:`VARIANTS`.
        seeds: seeds 0..seeds-1, each setting ``train.seed``.
        dataset: the contract data set every run reads.
        train_days: the training days, ``A..B``.
        test_days: the evaluation days, ``C..D``.
        out: the compare directory (created).
        ctx: this process's place in the process group.
        progress: progress bars of the training passes.
        train: False only writes the tables of the runs already finished in ``out``.
        runs_bar: a bar (rank 0) of the runs finished out of those to do, with an ETA.
    """
    if seeds < 1:
        raise ConfigError("--seeds", "", f"must be >= 1, got {seeds}")
    out = Path(out)
    runs = [Run(v, s) for v in variants for s in range(seeds)]
    for variant in variants:  # every variant must build before hours of training start
        run_config(base, Run(variant, 0))
    settings = _settings(dataset, train_days, test_days)
    todo: list[Run] | None = None
    if ctx.is_main:
        # Before the first run: stopped during it, the compare leaves a folder to resume.
        (out / "runs").mkdir(parents=True, exist_ok=True)
        todo = pending_runs(out, base, runs, settings)
        if train:
            finished = load_runs(out)
            for variant in dict.fromkeys(r.variant for r in todo):
                check_same_environment(
                    variant,
                    [r for r in finished if r["variant"] == variant],
                    here=run_environment(ctx),
                )
        skipped = [r.run_id for r in runs if r not in todo]
        log.info(
            "compare: %d runs (%d variants x %d seeds) into %s",
            len(runs),
            len(variants),
            seeds,
            out,
        )
        if not train:
            log.info("report only: %d of them finished, %d not trained", len(skipped), len(todo))
            todo = []
        elif skipped:
            log.info(
                "resume: %d runs already finished in %s, skipped: %s",
                len(skipped),
                out,
                ", ".join(skipped),
            )
    if ctx.world_size > 1:
        # Rank 0's view of the finished runs decides for all (nodes may not share a disk).
        box = [todo]
        dist.broadcast_object_list(box, src=0)
        todo = box[0]
    assert todo is not None
    # The log lines go above the bar instead of breaking it.
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=len(todo), desc="compare", unit="run", disable=not (runs_bar and ctx.is_main)
        ) as bar,
    ):
        for i, run in enumerate(todo, 1):
            config = run_config(base, run)
            # Another compare into the same OUT (several can share the work) may have
            # finished this run since the start: skip it then.
            done = [ctx.is_main and (out / "runs" / f"{run.run_id}.json").exists()]
            if ctx.world_size > 1:
                dist.broadcast_object_list(done, src=0)
            if done[0]:
                if ctx.is_main:
                    log.info(
                        "run %d/%d: %s seed %d finished meanwhile by another compare, skipped",
                        i,
                        len(todo),
                        run.variant,
                        run.seed,
                    )
                bar.update()
                continue
            if ctx.is_main:
                log.info("run %d/%d: %s seed %d", i, len(todo), run.variant, run.seed)
            t0 = time.perf_counter()
            metrics = train_and_evaluate(
                config, dataset, train_days, test_days, ctx, progress=progress
            )
            wall = time.perf_counter() - t0
            if ctx.is_main:
                path = out / "runs" / f"{run.run_id}.json"
                _write_json(
                    path,
                    {
                        "variant": run.variant,
                        "seed": run.seed,
                        "wall_s": wall,
                        **settings,
                        "environment": run_environment(ctx),
                        "config": to_dict(config),
                        "metrics": metrics,
                    },
                )
                log.info(
                    "run %d/%d done in %.0f s: %s seed %d AUC %.4f, worst-scenario AUC "
                    "%.4f; wrote %s",
                    i,
                    len(todo),
                    wall,
                    run.variant,
                    run.seed,
                    metrics["overall"]["auc"] or float("nan"),
                    metrics["worst_scenario_auc"] or float("nan"),
                    path,
                )
            bar.update()
    if not ctx.is_main:
        return None
    summary = aggregate(load_runs(out), oracle_metrics(base, dataset, test_days), settings)
    paths = write_outputs(out, summary)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return summary
