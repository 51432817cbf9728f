"""The `protorec` command: one subcommand per job, each in its own module under jobs/.

Each job module exposes ``add_parser(subparsers)``, which registers its subcommand and
sets ``func`` (called with the parsed namespace, returning the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Job modules, in the order `protorec --help` lists them.
JOBS = ("simulate", "ingest", "train", "tune", "evaluate", "predict", "compare", "plan",
        "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protorec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in JOBS:
        importlib.import_module(f"protorec.jobs.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
