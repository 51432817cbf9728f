"""`protorec daily`: run the daily job on this node's processes and exit with its status.

Launches ``jobs/train_daily.py`` through torchrun (``python -m torch.distributed.run``:
``--standalone`` on one node, the c10d rendezvous on several) and exits with the job's
documented status — 0 published, 3 refused by the gate, 4 no data, 5 work directory
locked, 6 the day breaks the data contract, 2 bad arguments — where torchrun alone would
report every one of them as 1 with a traceback. Each node's local rank 0 writes the
status to a file the launcher names (``PROTOREC_STATUS_FILE``); a worker that crashed
leaves none, and the launcher exits 1 after torchrun's own report.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

from protorec.pipeline.quiet import add_log_level_argument

#: One line per status for the summary (jobs/train_daily.py documents them).
OUTCOMES = {
    0: "published",
    2: "bad arguments or config (see above)",
    3: "refused by the gate: yesterday's export stays current",
    4: "no data for the day yet: nothing changed",
    5: "the work directory is locked by another job: nothing changed",
    6: "the day's partition breaks the data contract: nothing changed",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "daily", help="the daily job on N processes (torchrun), exiting with its status"
    )
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day to train")
    p.add_argument("--workdir", required=True, help="checkpoints, exports and run records")
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument("--force", action="store_true", help="retrain a date that is already done")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_log_level_argument(p)
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="processes on this node (one per GPU on CUDA)",
    )
    p.add_argument("--nnodes", type=int, default=1, metavar="N", help="nodes of the job")
    p.add_argument("--node-rank", type=int, default=0, metavar="R", help="this node's rank")
    p.add_argument(
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        help="the c10d rendezvous, required with --nnodes > 1",
    )
    p.add_argument("--rdzv-id", help="rendezvous id shared by the nodes (default: protorec-DATE)")
    p.set_defaults(func=run)


def launch_command(args: argparse.Namespace) -> list[str]:
    """The torchrun command line for ``args`` (the daily job's flags passed on)."""
    if args.nproc_per_node < 1 or args.nnodes < 1:
        raise ValueError("--nproc-per-node and --nnodes must be >= 1")
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={args.nproc_per_node}",
    ]
    if args.nnodes == 1:
        launcher.append("--standalone")
    else:
        if not args.rdzv_endpoint:
            raise ValueError(f"--rdzv-endpoint (host:port) is required with --nnodes {args.nnodes}")
        launcher += [
            f"--nnodes={args.nnodes}",
            f"--node-rank={args.node_rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={args.rdzv_endpoint}",
            f"--rdzv-id={args.rdzv_id or 'protorec-' + args.date}",
        ]
    spec = importlib.util.find_spec("protorec.jobs.train_daily")
    assert spec is not None and spec.origin is not None  # this package's own module
    job = [
        spec.origin,
        "--config",
        args.config,
        "--date",
        args.date,
        "--workdir",
        args.workdir,
        "--device",
        args.device,
    ]
    if args.dataset:
        job += ["--dataset", args.dataset]
    job += ["--force"] * args.force + ["--quiet"] * args.quiet
    job += ["--log-level", args.log_level]
    return launcher + job


def recorded_before(workdir: str, date: str, force: bool) -> bool:
    """Whether the job will skip ``date``: a run record and no ``--force``.

    The record's path is pipeline/daily.py's ``Workdir.record``.
    """
    return not force and os.path.exists(os.path.join(workdir, "runs", f"{date}.json"))


def outcome(status: int, done_before: bool) -> str:
    """The summary's words for ``status``.

    ``done_before``: the day had a run record before this launch and no ``--force``, so
    the job changed nothing and returned the recorded day's status.
    """
    words = OUTCOMES.get(status, "status")
    if done_before and status in (0, 3):
        return f"already done ({words}): nothing changed; --force retrains it"
    return words


def run(args: argparse.Namespace) -> int:
    from protorec.jobs.train_daily import STATUS_FILE_ENV

    try:
        command = launch_command(args)
    except ValueError as exc:
        print(f"protorec daily: {exc}", file=sys.stderr)
        return 2
    done_before = recorded_before(args.workdir, args.date, args.force)
    fd, status_file = tempfile.mkstemp(prefix="protorec-daily-", suffix=".status")
    os.close(fd)
    try:
        # torchrun forwards SIGINT/SIGTERM to the workers; the job's logs pass through.
        returncode = subprocess.run(
            command, env={**os.environ, STATUS_FILE_ENV: status_file}
        ).returncode
        with open(status_file) as f:
            text = f.read().strip()
    finally:
        os.unlink(status_file)
    if text:
        status = int(text)
        print(
            f"protorec daily: {args.date}: {outcome(status, done_before)} (exit {status})",
            file=sys.stderr,
        )
        return status
    print(
        f"protorec daily: {args.date}: failed (torchrun exit {returncode}; the log above "
        "says why); rerunning the same command resumes from the last checkpoint (exit 1)",
        file=sys.stderr,
    )
    return 1
