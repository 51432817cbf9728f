"""One day of the daily warm-start job: resume or warm-start, refresh, train, gate, publish.

The work directory (docs/design.md, "Outputs")::

    checkpoints/<date>/          end of day (DCP, one shard per rank; meta.json last)
    checkpoints/<date>.partial/  the day's newest mid-day checkpoint, removed at the end
    exports/<date>/              the inference export (pipeline/export.py), if the gate passed
    runs/<date>.json             the day's record: status, gate, metrics, drift (written last)
    LAST_GOOD                    the date of the newest published export
    job.lock                     held by the running job (pipeline/workdir_lock.py)

A day is done when its run record exists: re-running it changes nothing unless forced.
A killed run leaves the partial checkpoint; the rerun loads it and trains the remaining
batches of the same pass, so no sample is trained twice or skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from protorec.pipeline.atomic import write_text
from protorec.pipeline.checkpoint import (
    WarmStart,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    warm_start_checkpoint,
)
from protorec.pipeline.config import ConfigError
from protorec.pipeline.contract import (
    QUARANTINE_DIR,
    ContractError,
    ValidationReport,
    partition_dir,
    reason_counts,
)
from protorec.pipeline.day_reader import DayReader, day_files
from protorec.pipeline.distributed import DistContext, broadcast_from_rank0
from protorec.pipeline.experiment import oracle_metrics
from protorec.pipeline.export import MANIFEST as EXPORT_MANIFEST
from protorec.pipeline.export import export_model
from protorec.pipeline.gate import GateDecision, decide
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.metrics import compute_metrics
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.monitoring import (
    JobReport,
    prototype_mass_shift,
    publish,
    watch_ratio_shift,
)
from protorec.pipeline.provenance import computed_on
from protorec.pipeline.refresh import (
    refresh_id_maps,
    refresh_watch_head,
    reseed_dead_prototypes,
)
from protorec.pipeline.retention import prune
from protorec.pipeline.tensorboard import TensorBoardLog
from protorec.pipeline.trainer import (
    ShardedModel,
    predict_pass,
    shard_model,
    train_pass,
)
from protorec.pipeline.workdir_lock import WorkdirLock, WorkdirLocked

log = logging.getLogger(__name__)

#: Exit statuses of the job: published, gate refused (yesterday's export stays current),
#: the day's partition is missing (upstream data not landed; nothing was changed), another
#: job holds the work directory's lock (nothing was read or changed).
EXIT_OK = 0
EXIT_BAD_CONFIG = 2
EXIT_REFUSED = 3
EXIT_NO_DATA = 4
EXIT_LOCKED = 5
EXIT_BAD_DATA = 6

#: Test hook: "RANK:STEP" makes that rank SIGKILL itself right after that training step
#: (after the step's checkpoint, if any): the crash-safety test kills a rank this way.
FAULT_ENV = "PROTOREC_KILL_AT_STEP"

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Workdir:
    """Paths of the daily job's work directory."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, day: dt.date) -> Path:
        return self.checkpoints / day.isoformat()

    def partial(self, day: dt.date) -> Path:
        return self.checkpoints / f"{day.isoformat()}.partial"

    def export(self, day: dt.date) -> Path:
        return self.root / "exports" / day.isoformat()

    def record(self, day: dt.date) -> Path:
        return self.root / "runs" / f"{day.isoformat()}.json"

    @property
    def last_good(self) -> Path:
        return self.root / "LAST_GOOD"

    def read_record(self, day: dt.date) -> dict | None:
        try:
            return json.loads(self.record(day).read_text())
        except FileNotFoundError:
            return None

    def previous_good(self, day: dt.date) -> Path | None:
        """The newest end-of-day checkpoint before ``day`` whose model was published.

        Published: its meta says ``exported`` and the day's export is in place (its
        manifest exists); the checkpoint itself must pass verification (a refused one is
        logged by :func:`read_meta` and skipped for the day before it).
        """
        if not self.checkpoints.is_dir():
            return None
        names = sorted(
            p.name
            for p in self.checkpoints.iterdir()
            if _DATE.match(p.name) and p.name < day.isoformat()
        )
        for name in reversed(names):
            if not (self.root / "exports" / name / EXPORT_MANIFEST).is_file():
                continue
            meta = read_meta(self.checkpoints / name)
            if meta is not None and meta.get("status") == "exported":
                return self.checkpoints / name
        return None

    def sweep_leftovers(self) -> list[tuple[Path, int]]:
        """Remove what killed runs left under checkpoints/ and exports/; return it with sizes.

        ``.tmp-*`` (a checkpoint or export being written) and ``.old-*`` (a replaced one
        not yet removed, ``pipeline/atomic.py``) are never read. Only safe under the work
        directory's lock: another live job's temporaries would go too.
        """
        removed = []
        for folder in (self.checkpoints, self.root / "exports"):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if not path.name.startswith((".tmp-", ".old-")):
                    continue
                files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
                size = sum(f.stat().st_size for f in files)
                log.warning("removing %s (%s bytes), left by a killed run", path, f"{size:,}")
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append((path, size))
        return removed


def _scenario_names(config: ProtorecConfig) -> list[str]:
    return [config.data.scenario_name(i) for i in range(len(config.data.scenarios))]


def evaluate(
    sharded: ShardedModel, loader: ContractLoader, config: ProtorecConfig, ctx: DistContext
) -> dict:
    """compute_metrics of the sharded model on ``loader``'s rows, on every rank.

    The predictions go to rank 0 only, which computes the metrics and hands them to the
    other ranks (they take the gate's decision from the same figures).
    """
    preds = predict_pass(sharded, loader, ctx)
    metrics = None
    if preds is not None:
        has_watch = "watch_pred_ms" in preds
        metrics = compute_metrics(
            preds["click"],
            preds["click_prob"],
            preds["scenario"],
            preds["user_id"],
            preds["day"],
            watch_ms=preds["watch_ms"] if has_watch else None,
            pred_watch_ms=preds.get("watch_pred_ms"),
            scenario_names=_scenario_names(config),
        )
    return broadcast_from_rank0(metrics)


def _day_columns(
    dataset: Path, day: dt.date, config: ProtorecConfig, valid: np.ndarray | None = None
) -> dict | None:
    """Scenario index, click and watch ratio of the valid rows of ``day`` (None: no day).

    ``valid``: the day's mask of valid rows when the caller has checked it already.
    """
    try:
        reader = DayReader(dataset, [day])
        if valid is None:  # rows that break the contract are not the day's data
            valid = reader.invalid_reasons(config.data.scenarios) < 0
    except (FileNotFoundError, ContractError):
        return None
    table = reader.read(["scenario", "click", "watch_ms", "duration_ms"], np.flatnonzero(valid))
    codes = {c: i for i, c in enumerate(config.data.scenarios)}
    scenario = np.vectorize(codes.__getitem__, otypes=[np.int64])(
        table.column("scenario").to_numpy()
    )
    watch = table.column("watch_ms").to_numpy(zero_copy_only=False).astype(np.float64)
    duration = table.column("duration_ms").to_numpy(zero_copy_only=False).astype(np.float64)
    ratio = watch / duration
    return {"scenario": scenario, "click": table.column("click").to_numpy(), "ratio": ratio}


def _quarantined(dataset: Path, day: dt.date, config: ProtorecConfig) -> dict[str, int]:
    """Rows of ``day`` the contract check set aside, per scenario name (all zero if none)."""
    names = _scenario_names(config)
    counts = dict.fromkeys(names, 0)
    try:
        column = DayReader(dataset / QUARANTINE_DIR, [day]).read(["scenario"])
    except FileNotFoundError:  # nothing quarantined that day
        return counts
    for code in column.column("scenario").to_pylist():
        if code in config.data.scenarios:
            counts[names[config.data.scenarios.index(code)]] += 1
    return counts


def drift(
    config: ProtorecConfig, dataset: Path, day: dt.date, valid: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Per scenario: rows, label rate and watch-ratio shift (W1) against the day before.

    Counts the day's valid rows, and the day before's (``rows_day_before``, NaN without
    a partition) for :func:`vanished_scenarios`.
    """
    today = _day_columns(dataset, day, config, valid)
    assert today is not None, "drift is measured on a day whose partition was read"
    before = _day_columns(dataset, day - dt.timedelta(days=1), config)
    out = {}
    for s, name in enumerate(_scenario_names(config)):
        rows = today["scenario"] == s
        ratio = today["ratio"][rows]
        entry = {
            "rows": float(rows.sum()),
            "label_rate": float(today["click"][rows].mean()) if rows.any() else float("nan"),
            "watch_ratio_shift": float("nan"),
            "rows_day_before": float("nan"),
        }
        if before is not None:
            prev_rows = before["scenario"] == s
            prev = before["ratio"][prev_rows]
            entry["rows_day_before"] = float(prev_rows.sum())
            entry["watch_ratio_shift"] = watch_ratio_shift(
                ratio[np.isfinite(ratio)], prev[np.isfinite(prev)]
            )
        out[name] = entry
    return out


def vanished_scenarios(per_scenario: dict[str, dict[str, float]]) -> list[str]:
    """Scenarios with rows the day before and none today (from :func:`drift`).

    >>> vanished_scenarios({"feed": {"rows": 5.0, "rows_day_before": 4.0},
    ...                     "live": {"rows": 0.0, "rows_day_before": 9.0},
    ...                     "new": {"rows": 0.0, "rows_day_before": float("nan")}})
    ['live']
    """
    return [name for name, d in per_scenario.items() if d["rows"] == 0 and d["rows_day_before"] > 0]


def _prototype_mass(sharded: ShardedModel, loader: ContractLoader) -> np.ndarray | None:
    """(S, K_g) plan mass of each scenario's rows on the global prototypes, all ranks."""
    report = sharded.module.prototype_report(loader)
    if report is None:  # a model without prototypes
        return None
    mass = report.global_usage.clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(mass)
    return mass.numpy()


def _maybe_fault(ctx: DistContext, step: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if spec:
        rank, at = (int(v) for v in spec.split(":"))
        if rank == ctx.rank and step == at:
            log.error("%s=%s: rank %d kills itself after step %d", FAULT_ENV, spec, rank, step)
            os.kill(os.getpid(), signal.SIGKILL)


def run_day(
    config: ProtorecConfig,
    day: dt.date,
    workdir: str | Path,
    ctx: DistContext,
    dataset: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> int:
    """Train, gate and publish ``day``; return the job's exit status (see EXIT_*).

    Rank 0 holds the work directory's lock for the whole run (``pipeline/workdir_lock.py``);
    when another job holds it, every rank returns :data:`EXIT_LOCKED` at once.
    """
    wd = Workdir(Path(workdir))
    lock = WorkdirLock(wd.root) if ctx.is_main else None
    refused = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirLocked as exc:
            refused = str(exc)
        else:
            try:
                wd.sweep_leftovers()  # under the lock: no live job's temporaries
            except OSError as exc:
                log.warning("%s: leftovers not all removed: %s", day, exc)
    refused = broadcast_from_rank0(refused)
    if refused is not None:
        if ctx.is_main:
            log.error("%s: %s; this run changed nothing (exit %d)", day, refused, EXIT_LOCKED)
        return EXIT_LOCKED
    try:
        return _run_day(config, day, wd, ctx, dataset, force, progress)
    finally:
        if lock is not None:
            lock.release()


def _run_day(
    config: ProtorecConfig,
    day: dt.date,
    wd: Workdir,
    ctx: DistContext,
    dataset: str | Path | None,
    force: bool,
    progress: bool,
) -> int:
    """:func:`run_day` under the work directory's lock."""
    started = time.time()
    dataset = Path(dataset if dataset is not None else config.data.dataset)
    record = wd.read_record(day)
    if record is not None and not force:
        log.info(
            "%s already done (%s, %s): nothing changed; --force retrains it",
            day,
            record["status"],
            wd.record(day),
        )
        return int(record["exit_status"])
    if not day_files(dataset, day):
        log.error(
            "%s: no partition %s: the day's data has not landed; nothing changed",
            day,
            partition_dir(dataset, day),
        )
        return EXIT_NO_DATA
    daily = config.daily
    valid, invalid = _check_day(config, dataset, day)
    if valid is None:
        return EXIT_NO_DATA if invalid.rows_in == 0 else EXIT_BAD_DATA
    if force and ctx.is_main:
        shutil.rmtree(wd.partial(day), ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()

    torch.manual_seed(config.train.seed)
    sharded = shard_model(
        build_model(config, ebc_device="meta"), ctx, config.train, config.loader.batch_size
    )
    id_maps = sharded.module.managed_id_maps()  # read at each pass: today's admissions count
    train_loader = ContractLoader(
        config,
        [day],
        dataset,
        split="train",
        valid=valid,
        holdout_fraction=daily.holdout_fraction,
        id_maps=id_maps,
    )
    holdout = ContractLoader(
        config,
        [day],
        dataset,
        split="holdout",
        shuffle=False,
        valid=valid,
        holdout_fraction=daily.holdout_fraction,
        id_maps=id_maps,
    )

    partial = read_meta(wd.partial(day))
    if partial is not None:
        meta = load_checkpoint(sharded, wd.partial(day))
        epoch, start_batch = meta["epoch"], meta["batches_done"]
        warm_from, baseline = meta["warm_from"], meta["baseline"]
        refresh = meta["refresh"]
        log.info(
            "%s: resuming from %s at epoch %d, batch %d of %d",
            day,
            wd.partial(day),
            epoch,
            start_batch,
            len(train_loader),
        )
    else:
        epoch = start_batch = 0
        previous = wd.previous_good(day)
        warm_from = str(previous) if previous else None
        baseline = None
        warm = None
        if previous is not None:
            try:
                warm = warm_start_checkpoint(sharded, previous, daily.warm_start_rename)
            except ConfigError as exc:  # every rank reads the same checkpoint: all stop
                log.error("%s: %s; nothing changed (exit %d)", day, exc, EXIT_BAD_CONFIG)
                return EXIT_BAD_CONFIG
            log.info("%s: warm start from %s (%d tensors loaded)", day, previous, warm.loaded)
            _log_warm_start(day, warm)
            if not warm.partial:
                # Yesterday's model on today's held-out rows: what the gate compares with.
                baseline = evaluate(sharded, holdout, config, ctx)
            else:
                log.warning(
                    "%s: the model changed since %s: the gate has no baseline "
                    "today (a half-initialised model is not yesterday's)",
                    day,
                    previous,
                )
        else:
            log.info(
                "%s: cold start (no published checkpoint before this date in %s)",
                day,
                wd.checkpoints,
            )
        refresh = _refresh(sharded, train_loader, config, day, dataset)
        if warm is not None:
            refresh["warm_start"] = warm.as_dict()

    def save_partial(batches_done: int, at_epoch: int) -> None:
        save_checkpoint(
            sharded,
            wd.partial(day),
            {
                "date": day.isoformat(),
                "epoch": at_epoch,
                "batches_done": batches_done,
                "warm_from": warm_from,
                "baseline": baseline,
                "refresh": refresh,
                "world_size": ctx.world_size,
            },
        )

    resumed_at = {"epoch": epoch, "batch": start_batch} if partial is not None else None
    steps = samples = 0
    seconds = 0.0
    board = (
        TensorBoardLog(wd.root / "tensorboard" / day.isoformat())
        if daily.tensorboard and ctx.is_main
        else None
    )
    for e in range(epoch, config.train.epochs):
        first = start_batch if e == epoch else 0
        train_loader.set_epoch(e, first)

        def on_step(step: int, _outputs, e=e, first=first) -> None:
            done = first + step
            every = daily.checkpoint_every_steps
            if every and done % every == 0 and done < len(train_loader):
                save_partial(done, e)
            _maybe_fault(ctx, done)

        stats = train_pass(
            sharded,
            train_loader,
            ctx,
            config.train,
            len(train_loader) - first,
            on_step=on_step,
            progress=progress,
            tensorboard=board,
            step_offset=e * len(train_loader) + first,
        )
        steps, samples, seconds = (
            steps + stats.steps,
            samples + stats.samples,
            seconds + stats.seconds,
        )
        if e + 1 < config.train.epochs:
            save_partial(0, e + 1)

    metrics = evaluate(sharded, holdout, config, ctx)
    # OOV ids per table and filled values, of the last training pass and the hold-out
    metrics["loader"] = {
        "train": train_loader.stats.all_reduce().as_dict(),
        "holdout": holdout.stats.all_reduce().as_dict(),
    }
    if board is not None:
        board.evaluation(config.train.epochs * len(train_loader), metrics, prefix="holdout")
        board.close()
    metrics["computed_on"] = computed_on(
        dataset,
        day.isoformat(),
        metrics["overall"]["samples"],
        f"hold-out: {daily.holdout_fraction:.0%} of the day's rows, not trained on",
        config.model.name,
        ctx.world_size,
    )
    gate = decide(metrics, baseline, daily.max_auc_drop, daily.min_gate_rows)
    status = "exported" if gate.passed else "refused"
    log.info("%s: gate %s: %s", day, "passed" if gate.passed else "REFUSED", gate.reason)
    mass = _prototype_mass(sharded, holdout)
    # The export first: a checkpoint that says "exported" then always has its export in
    # place (a kill between the two leaves the day unfinished, and its rerun redoes both).
    if gate.passed:
        export_model(sharded, config, wd.export(day), metrics)
    save_checkpoint(
        sharded,
        wd.checkpoint(day),
        {
            "date": day.isoformat(),
            "status": status,
            "warm_from": warm_from,
            "world_size": ctx.world_size,
        },
    )
    record = None
    if ctx.is_main:
        record = _finish(
            config,
            wd,
            dataset,
            day,
            status,
            gate,
            metrics,
            baseline,
            refresh,
            warm_from,
            resumed_at,
            mass,
            steps,
            samples,
            seconds,
            started,
            invalid=invalid,
            valid=valid,
        )
    record = broadcast_from_rank0(record)
    if dist.is_initialized():
        dist.barrier()
    return int(record["exit_status"])


def _check_day(
    config: ProtorecConfig, dataset: Path, day: dt.date
) -> tuple[np.ndarray | None, ValidationReport]:
    """The day's rows checked by the contract's rules before any work (ingest's rules).

    Returns the mask of valid rows (None when the day cannot be used: it is logged why)
    and the counts by reason. Unusable: a file that cannot be read or lacks a contract
    column, no rows, or more than ``daily.max_invalid_share`` of them invalid.
    """
    try:
        reasons = DayReader(dataset, [day]).invalid_reasons(config.data.scenarios)
    except ContractError as exc:
        log.error(
            "%s: the day's partition cannot be read: %s; nothing changed (exit %d)",
            day,
            exc,
            EXIT_BAD_DATA,
        )
        return None, ValidationReport(rows_in=-1)
    report = ValidationReport(
        rows_in=len(reasons), rows_kept=int((reasons < 0).sum()), quarantined=reason_counts(reasons)
    )
    why = ", ".join(f"{k} {v}" for k, v in sorted(report.quarantined.items()))
    if report.rows_in == 0:
        log.error(
            "%s: the partition %s holds no rows; nothing changed (exit %d)",
            day,
            partition_dir(dataset, day),
            EXIT_NO_DATA,
        )
        return None, report
    if report.bad_share > config.daily.max_invalid_share:
        log.error(
            "%s: %d of %d rows break the data contract (%s), more than "
            "daily.max_invalid_share %.2f: fix the partition %s; nothing changed "
            "(exit %d)",
            day,
            report.rows_quarantined,
            report.rows_in,
            why,
            config.daily.max_invalid_share,
            partition_dir(dataset, day),
            EXIT_BAD_DATA,
        )
        return None, report
    if report.rows_quarantined:
        log.warning(
            "%s: %d of %d rows break the data contract and are left out of "
            "training and evaluation: %s",
            day,
            report.rows_quarantined,
            report.rows_in,
            why,
        )
    return reasons < 0, report


def _log_warm_start(day: dt.date, warm: WarmStart) -> None:
    """Every key a changed config left to its fresh initialisation, skipped or renamed."""
    for key, why in warm.initialised.items():
        log.info("%s: warm start: %s initialised (%s)", day, key, why)
    for key in warm.skipped:
        log.info("%s: warm start: %s skipped (not in today's model)", day, key)
    for key, source in warm.renamed.items():
        log.info("%s: warm start: %s loaded from %s", day, key, source)


def _refresh(
    sharded: ShardedModel,
    loader: ContractLoader,
    config: ProtorecConfig,
    day: dt.date,
    dataset: Path,
) -> dict:
    """Before training: the watch head's statistics and codebook, then dead prototypes.

    The watch head (``pipeline/refresh.py``) fits D2Q / TPM tables once and refits
    ProWTP's HVQ-VAE codebook from the watch ratios of the day's training rows (never
    the hold-out slice), warm-started with prototype identities kept; DistProto's dead
    prototypes are re-seeded from a sample of the day's rows. Every rank computes the
    same from the same data and seeds.
    """
    out: dict = {"codebook": None}
    rows = loader.rows  # O(rows) on each read of the property: built once here
    # Today's new ids get rows before anything reads the training rows through the map.
    ids = refresh_id_maps(sharded, config.features, loader.reader, rows, day, config.train.seed)
    if ids:
        out["ids"] = ids
        for name, counts in ids.items():
            log.info("%s: ids of %s: %s", day, name, counts)
    # The training rows only: the hold-out slice the gate judges on stays unseen.
    refit = refresh_watch_head(sharded.module, loader.reader, rows)
    if refit is not None:
        moved = refit.relative_movement
        out["codebook"] = {
            "identity_kept": refit.identity_kept,
            "relabelled": int((refit.code_assignment != np.arange(moved.size)).sum()),
            "revived": int(np.asarray(refit.revived).sum()),
            "max_relative_movement": float(moved.max()),
            "median_relative_movement": float(np.median(moved)),
        }
        log.info(
            "%s: codebook refitted: identities %s, median movement %.3f of the "
            "prototype spacing (max %.3f)",
            day,
            "kept" if refit.identity_kept else "RELABELLED",
            out["codebook"]["median_relative_movement"],
            out["codebook"]["max_relative_movement"],
        )
    sample = []
    for batch in loader:
        sample.append(batch)
        if len(sample) >= 8:
            break
    report = reseed_dead_prototypes(
        sharded.module,
        sample,
        config.daily.dead_prototype_fraction,
        seed=config.train.seed + day.toordinal(),
    )
    out["prototypes"] = None
    if report is not None:
        if report.reseeded:
            log.info(
                "%s: re-seeded %d dead prototypes (global %s, scenario %s)",
                day,
                report.reseeded,
                report.dead_global,
                report.dead_scenario,
            )
        out["prototypes"] = {
            "dead_global": report.dead_global,
            "dead_scenario": {str(k): v for k, v in report.dead_scenario.items()},
        }
    return out


def _finish(
    config,
    wd: Workdir,
    dataset: Path,
    day: dt.date,
    status: str,
    gate: GateDecision,
    metrics: dict,
    baseline: dict | None,
    refresh: dict,
    warm_from: str | None,
    resumed_at: dict | None,
    mass: np.ndarray | None,
    steps: int,
    samples: int,
    seconds: float,
    started: float,
    invalid: ValidationReport,
    valid: np.ndarray,
) -> dict:
    """Rank 0: the run record, LAST_GOOD, the partial checkpoint's removal, Prometheus."""
    names = _scenario_names(config)
    per_scenario = drift(config, dataset, day, valid)
    quarantined = _quarantined(dataset, day, config)
    yesterday = wd.read_record(day - dt.timedelta(days=1))
    prev_mass = (
        np.asarray(yesterday["prototype_mass"])
        if yesterday and yesterday.get("prototype_mass")
        else None
    )
    vanished = vanished_scenarios(per_scenario)
    if vanished:
        # A feed tab switched off upstream, or a broken export of one scenario's logs:
        # either way the model trained without it today, and the gate cannot judge it.
        log.warning(
            "%s: scenario(s) %s had rows the day before and none today", day, ", ".join(vanished)
        )
    for s, name in enumerate(names):
        entry = per_scenario[name]
        entry.pop("rows_day_before")
        entry["auc"] = metrics["per_scenario"][name]["auc"]
        entry["rows_quarantined"] = float(quarantined[name])
        entry["prototype_mass_shift"] = (
            prototype_mass_shift(mass[s], prev_mass[s])
            if mass is not None and prev_mass is not None and prev_mass.shape == mass.shape
            else float("nan")
        )
    exit_status = EXIT_OK if gate.passed else EXIT_REFUSED
    record = {
        "date": day.isoformat(),
        "status": status,
        "exit_status": exit_status,
        "warm_from": warm_from,
        "resumed_at": resumed_at,
        "gate": gate.as_dict(),
        "invalid_rows": invalid.as_dict(),
        "vanished_scenarios": vanished,
        "metrics": metrics,
        "baseline": baseline,
        "oracle": oracle_metrics(
            config,
            dataset,
            f"{day}..{day}",
            holdout_fraction=config.daily.holdout_fraction,
            valid=valid,
        ),
        "refresh": refresh,
        "drift": {
            k: {
                m: (v if np.isfinite(v) else None)
                for m, v in d.items()
                if m
                in (
                    "rows",
                    "label_rate",
                    "watch_ratio_shift",
                    "prototype_mass_shift",
                    "rows_quarantined",
                )
            }
            for k, d in per_scenario.items()
        },
        "prototype_mass": mass.tolist() if mass is not None else None,
        "train": {
            "steps": steps,
            "samples": samples,
            "seconds": round(seconds, 3),
            "samples_per_s": samples / seconds if seconds else None,
        },
        "duration_seconds": round(time.time() - started, 3),
    }
    if gate.passed:
        write_text(wd.last_good, day.isoformat() + "\n")
        # after LAST_GOOD names this day, so that its checkpoint and export are kept
        record["retention"] = prune(
            wd.root, day.isoformat(), config.daily.keep_checkpoints, config.daily.keep_exports
        )
    write_text(wd.record(day), json.dumps(record, indent=2, allow_nan=False))
    shutil.rmtree(wd.partial(day), ignore_errors=True)
    report = JobReport(
        job=config.daily.job_name,
        per_scenario={
            name: {k: v for k, v in per_scenario[name].items() if v is not None} for name in names
        },
        values={
            "samples": float(samples),
            "step_seconds": seconds / steps if steps else float("nan"),
            "duration_seconds": time.time() - started,
            "exported": 1.0 if gate.passed else 0.0,
            "rows_invalid": float(invalid.rows_quarantined),
            # a refused day is a successful run too: ``exported`` tells them apart
            "last_success_timestamp": time.time(),
        },
        ids=refresh.get("ids", {}),
    )
    if not publish(report, config.daily.pushgateway or None, config.daily.textfile or None):
        log.warning("%s: monitoring not updated (see above); the day's outputs are published", day)
    return record
