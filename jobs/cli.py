"""The `protorec` command: one subcommand per job, each in its own module under jobs/.

Each job module exposes ``add_parser(subparsers)``, which registers its subcommand and
sets ``func`` (called with the parsed namespace, returning the exit status). Job modules
import torch and the pipeline inside their ``run`` functions, so that ``protorec --help``
answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from protorec.pipeline.provenance import package_version
from protorec.pipeline.quiet import quiet_third_party_logs, quiet_third_party_warnings

#: Job modules, in the order `protorec --help` lists them.
JOBS = (
    "simulate",
    "ingest",
    "train",
    "tune",
    "evaluate",
    "predict",
    "compare",
    "daily",
    "plan",
    "report",
)

#: Exit status of a command whose reader went away (``protorec report | head``): 128 +
#: SIGPIPE, as a shell reports a program that the signal ended.
EXIT_BROKEN_PIPE = 141


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one that the help does not already give."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protorec", description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter
    )
    parser.add_argument("--version", action="version", version=f"protorec {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in JOBS:
        module = importlib.import_module(f"protorec.jobs.{name}")
        module.add_parser(sub)
        verb = sub.choices[name]
        verb.formatter_class = DefaultsFormatter
        verb.description = verb.description or (module.__doc__ or "").splitlines()[0]
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch is first imported, which starts OpenMP: waiting threads sleep instead of
    # spinning on a core that another process needs (see pipeline/threads.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    quiet_third_party_warnings()
    quiet_third_party_logs()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
