"""The daily warm-start job: train one day, gate it against yesterday's model, publish.

    torchrun --nproc_per_node=N jobs/train_daily.py --config C --date D --workdir W

Also ``python -m protorec.jobs.train_daily`` (one process). Exit status: 0 published
(or the date was already done), 3 refused by the gate (yesterday's export stays
current), 4 the day's partition is missing, 5 another job holds the work directory's
lock (``W/job.lock``; nothing changed), 6 the day's partition breaks the data contract
(unreadable file, missing column, or mostly invalid rows; nothing changed), 2 bad
arguments or config, 1 any other failure.
Under torchrun a worker's non-zero status reaches the shell as 1; the log says which.
``protorec daily`` launches the ranks through torchrun and exits with the job's status.
docs/daily.md describes the steps, the work directory and the metrics.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from protorec.pipeline.quiet import (
    add_log_level_argument,
    quiet_third_party_logs,
    quiet_third_party_warnings,
    setup_logging,
)
from protorec.pipeline.threads import add_threads_argument, set_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_daily", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day to train")
    p.add_argument("--workdir", required=True, help="checkpoints, exports and run records")
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument("--force", action="store_true", help="retrain a date that is already done")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA when torch sees a device, else CPU",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(p)
    add_log_level_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    # Before torch is first imported (see jobs/cli.py and pipeline/threads.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    quiet_third_party_warnings()
    quiet_third_party_logs()
    _tag_rank(int(os.environ.get("RANK", "0")))
    setup_logging(args.log_level, "%(asctime)s %(levelname)s [rank %(rank)s] %(name)s: %(message)s")

    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.daily import run_day
    from protorec.pipeline.distributed import init_distributed, shutdown_distributed
    from protorec.pipeline.inputs import InputError, check_dataset, days_of
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.trainer import check_embedding_optimizer

    try:
        days = days_of("--date", args.date)
        if len(days) != 1:
            raise InputError(
                "--date", args.date, "is a range: the daily job trains one day (YYYY-MM-DD)"
            )
        config = load_config(args.config)
        # A missing day is not checked here: it is exit status 4 (data not landed yet).
        check_dataset(args.dataset or config.data.dataset)
    except (ConfigError, InputError, FileNotFoundError) as exc:
        print(f"train_daily: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        check_embedding_optimizer(config.train, ctx.device)
    except ConfigError as exc:
        print(f"train_daily: {exc}", file=sys.stderr)
        shutdown_distributed()
        return 2
    try:
        return run_day(
            config,
            days[0],
            args.workdir,
            ctx,
            dataset=args.dataset,
            force=args.force,
            progress=not args.quiet,
        )
    finally:
        shutdown_distributed()


def _tag_rank(rank: int) -> None:
    """Every log record carries the rank (several ranks write to one console)."""
    factory = logging.getLogRecordFactory()

    def make(*a, **k):
        record = factory(*a, **k)
        record.rank = rank
        return record

    logging.setLogRecordFactory(make)


def _exit(status: int) -> None:
    """Exit without running the interpreter's finalisation.

    The process group is destroyed by then, but objects that TorchRec and DDP keep hold
    their last reference to gloo's worker threads until finalisation, where destroying
    them aborts the process now and then ("terminate called without an active
    exception", seen here once in ten 2-rank runs, after all outputs were written; see
    pytorch/pytorch#179291). Flush what is buffered, then leave with the job's status.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


#: Statuses the job returns on purpose (the module doc); anything else is a failure.
DOCUMENTED_STATUSES = frozenset({0, 2, 3, 4, 5, 6})
#: Set by ``protorec daily``: where each node's local rank 0 writes the job's status.
STATUS_FILE_ENV = "PROTOREC_STATUS_FILE"


def _hand_over_status(status: int) -> int:
    """Under ``protorec daily``, write a documented status to its file and exit 0.

    torchrun turns any worker's non-zero exit into 1 and prints a ChildFailedError
    traceback, which would hide a refusal (3), missing data (4), a held lock (5) or bad
    data (6): the launcher reads the status from the file instead. A crash keeps its
    non-zero exit, so torchrun reports it as it should.
    """
    path = os.environ.get(STATUS_FILE_ENV)
    if not path or status not in DOCUMENTED_STATUSES:
        return status
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        with open(path, "w") as f:
            f.write(f"{status}\n")
    return 0


if __name__ == "__main__":
    _exit(_hand_over_status(main()))
