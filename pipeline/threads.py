"""How many CPU threads torch may use in this process: one choice for every job.

torch's default is one OpenMP thread per core. On a machine where another process holds
a core, the threads that share it wait for one another at every parallel region, and a
run is several times slower than with one thread (2.5-20x measured on 2 cores with one
busy). So the default counts the cores this process may run on, takes away those the
load average shows busy and shares the rest among the local ranks; ``--threads N`` or
``OMP_NUM_THREADS`` override it.

This module imports nothing heavy at the top: the jobs' parsers use it before torch is
loaded.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadChoice:
    """The number of threads per process, why, and whether it asks for more than the cores."""

    threads: int
    reason: str
    oversubscribed: bool


def choose_threads(
    flag: int | None,
    env: Mapping[str, str],
    cores: int,
    load: float,
) -> ThreadChoice:
    """The thread count of one process: ``flag``, else ``OMP_NUM_THREADS``, else free cores.

    Args:
        flag: ``--threads`` (None when not given).
        env: the environment (``OMP_NUM_THREADS``, ``LOCAL_WORLD_SIZE``: processes of
            this job on this machine, 1 when unset).
        cores: cores this process may run on.
        load: the 1-minute load average (runnable processes, this job's included).

    >>> choose_threads(None, {}, cores=2, load=1.0).threads
    1
    >>> choose_threads(None, {"LOCAL_WORLD_SIZE": "2"}, cores=8, load=0.1).threads
    4
    >>> choose_threads(3, {"OMP_NUM_THREADS": "1"}, cores=2, load=0.0).oversubscribed
    True
    """
    local_ranks = max(1, _positive_int(env.get("LOCAL_WORLD_SIZE")) or 1)
    omp = _positive_int(env.get("OMP_NUM_THREADS"))
    explicit = flag if flag is not None else omp
    if explicit is not None:
        source = "--threads" if flag is not None else "OMP_NUM_THREADS"
        return ThreadChoice(
            explicit,
            f"{source}={explicit} ({local_ranks} local rank(s), {cores} core(s))",
            explicit * local_ranks > cores,
        )
    # round(): a load of 0.3 is noise, one of 0.8 is a core someone else is using.
    free = max(1, cores - round(load))
    threads = max(1, free // local_ranks)
    return ThreadChoice(
        threads,
        f"{cores} core(s), load {load:.2f} leaves {free} free, {local_ranks} local rank(s); "
        "override with --threads N or OMP_NUM_THREADS",
        False,
    )


def _positive_int(text: str | None) -> int | None:
    """``text`` as an int >= 1, or None when unset or not one (OpenMP ignores those too)."""
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None


def set_threads(flag: int | None) -> int:
    """Choose the thread count (:func:`choose_threads`), give it to torch, log why; returns it."""
    import torch

    cores = len(os.sched_getaffinity(0))
    choice = choose_threads(flag, os.environ, cores, os.getloadavg()[0])
    torch.set_num_threads(choice.threads)
    log.info("%d torch thread(s) per process: %s", choice.threads, choice.reason)
    if choice.oversubscribed:
        log.warning(
            "%d thread(s) x local ranks is more than the %d core(s) this process "
            "may use: threads will wait for one another",
            choice.threads,
            cores,
        )
    return choice.threads


def threads_flag(text: str) -> int:
    """The type of ``--threads``: a whole number >= 1."""
    value = _positive_int(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Register ``--threads N`` on a job's parser."""
    parser.add_argument(
        "--threads",
        type=threads_flag,
        default=None,
        metavar="N",
        help="torch threads per process (default: OMP_NUM_THREADS if set, else the cores "
        "not busy per the load average, shared among the local ranks)",
    )
