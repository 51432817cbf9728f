"""Hyper-parameter search on validation days: Optuna over a declared space per variant.

Every variant gets the same budget (``--trials``) and searches the settings that matter
for it (:data:`SPACES`: the learning rates for all, the papers' loss weights, prototype
counts, temperatures and solver settings for theirs). A trial trains on the training
days and is scored on the validation days only; the test days are never read here, so
``protorec compare`` on them reports models tuned on other days.

The study lives in ``OUT/tune.db`` (Optuna's SQLite storage): a search that is stopped
and started again continues with the trials it has, up to ``trials`` finished ones. The
best trial is written as a whole config (``OUT/best.yaml``: the base config with the best
values set), which ``protorec train`` and ``compare`` take as ``--config``, and every
trial is listed in ``OUT/trials.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from protorec.pipeline.config import ConfigError, to_dict
from protorec.pipeline.distributed import DistContext
from protorec.pipeline.experiment import train_and_evaluate
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.variants import VARIANTS, apply_overrides, variant_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """A number between ``low`` and ``high``, searched on a log scale when ``log``."""

    low: float
    high: float
    log: bool = True
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple[Any, ...]


Space = dict[str, Range | Choice]

#: What every variant searches: the two optimisers' steps.
COMMON: Space = {
    "train.embedding_lr": Range(0.01, 1.0),
    "train.dense_lr": Range(1e-4, 1e-2),
}
_DISTPROTO: Space = {
    "model.distproto.align_weight": Range(1e-3, 1.0),
    "model.distproto.ortho_weight": Range(1e-5, 1e-1),
    "model.distproto.num_global_prototypes": Choice((16, 32, 64)),
    "model.distproto.num_scenario_prototypes": Choice((8, 16, 32)),
    "model.distproto.ot.eps": Choice((0.02, 0.05, 0.1)),
    "model.distproto.ot.tau_a": Choice((0.1, 1.0, 10.0)),
}
_PROWTP: Space = {
    "model.watch.prowtp.temperature": Range(0.02, 1.0),
    "model.watch.prowtp.ot_lambda": Range(0.1, 10.0),
    "model.watch.prowtp.assign_weight": Range(0.01, 10.0),
    "model.watch.prowtp.compact_weight": Range(0.01, 1.0),
    "model.watch.weight": Range(0.1, 10.0),
}
#: Variant -> its own settings, searched beside :data:`COMMON`.
SPACES: dict[str, Space] = {
    "distproto": _DISTPROTO,
    "gpdnet": {
        **_DISTPROTO,
        "model.distproto.gpd_weight": Range(1e-3, 1.0),
        "model.distproto.gpd_temperature": Range(0.02, 1.0),
    },
    "prowtp": _PROWTP,
    "prowtp_ratio": _PROWTP,
    **{
        head: {"model.watch.weight": Range(0.1, 10.0)}
        for head in ("tr", "tr_ratio", "wlr", "d2q", "tpm")
    },
}

#: Metrics a search may maximise (keys of ``overall`` in the metrics), or minimise.
MAXIMISE = ("auc", "gauc", "ndcg_at_k", "xauc", "xgauc")
MINIMISE = ("logloss", "mae", "rmse")


def space_of(variant: str) -> Space:
    """The settings searched for ``variant``: :data:`COMMON` and its own."""
    if variant not in VARIANTS:
        raise ConfigError("--model", variant, f"unknown variant (known: {', '.join(VARIANTS)})")
    return {**COMMON, **SPACES.get(variant, {})}


def suggest(trial, space: Space) -> dict[str, Any]:
    """One point of ``space`` drawn by the Optuna ``trial``."""
    point: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            point[key] = trial.suggest_categorical(key, list(dim.values))
        elif dim.integer:
            point[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            point[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return point


@dataclass
class TuneResult:
    """The outcome of a search: the best trial's values and score, and where it is."""

    best_values: dict[str, Any]
    best_score: float
    trials: int
    best_config: Path


def tune(
    config: ProtorecConfig,
    variant: str,
    dataset: str | Path,
    train_days: str,
    valid_days: str,
    trials: int,
    out: str | Path,
    ctx: DistContext,
    metric: str = "auc",
    seed: int = 0,
    train_fn: Callable[..., dict] = train_and_evaluate,
) -> TuneResult:
    """Search ``variant``'s space on ``valid_days``, resuming the study kept in ``out``.

    Args:
        config: the base config (the variant is applied to it).
        variant: the variant searched (:data:`~protorec.pipeline.variants.VARIANTS`).
        dataset: the contract data set.
        train_days: each trial trains on these days (``A..B``).
        valid_days: each trial is scored on these days.
        trials: finished trials the study should have at the end (resumed ones count).
        metric: a key of the validation metrics' ``overall`` (see :data:`MAXIMISE`).
        out: the study's folder (created): tune.db, best.yaml, trials.json.
        ctx: the process group (one process).
        seed: seeds the sampler; the trials' training seed is the config's.
        train_fn: trains and scores one trial (``train_and_evaluate``'s signature).
    """
    import optuna  # the search library, needed by this command only

    if metric not in MAXIMISE + MINIMISE:
        raise ConfigError("--metric", metric, f"unknown (one of {', '.join(MAXIMISE + MINIMISE)})")
    base = variant_config(config, variant)
    space = space_of(variant)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{variant}-{metric}",
        storage=f"sqlite:///{out / 'tune.db'}",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        direction="maximize" if metric in MAXIMISE else "minimize",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial) -> float:
        values = suggest(trial, space)
        trial_config = apply_overrides(base, values, source=f"trial {trial.number}")
        metrics = train_fn(trial_config, dataset, train_days, valid_days, ctx, progress=False)
        score = float(metrics["overall"][metric])
        log.info("trial %d: %s %.4f with %s", trial.number, metric, score, values)
        if not math.isfinite(score):
            raise optuna.TrialPruned(f"{metric} is {score}")
        return score

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if done < trials:
        log.info("%s: %d of %d trials done, running %d", variant, done, trials, trials - done)
        study.optimize(objective, n_trials=trials - done)
    best = study.best_trial
    best_config = out / "best.yaml"
    best_config.write_text(
        yaml.safe_dump(to_dict(apply_overrides(base, best.params)), sort_keys=False)
    )
    (out / "trials.json").write_text(
        json.dumps(
            {
                "variant": variant,
                "metric": metric,
                "train_days": train_days,
                "valid_days": valid_days,
                "dataset": str(dataset),
                "best": {"number": best.number, "score": best.value, "values": best.params},
                "trials": [
                    {
                        "number": t.number,
                        "state": t.state.name,
                        "score": t.value,
                        "values": t.params,
                    }
                    for t in study.trials
                ],
            },
            indent=2,
        )
    )
    assert best.value is not None  # best_trial is a finished trial
    return TuneResult(dict(best.params), best.value, len(study.trials), best_config)
