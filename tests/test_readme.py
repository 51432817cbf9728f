"""README's commands, as written, against the real command line: README cannot drift.

Every ``protorec`` command of README's bash blocks must parse with ``protorec``'s own
argument parser (an unknown verb, flag or choice fails here), every verb must be shown,
and the cheapest ones run at small sizes.
"""

import re
import shlex

import pytest

from protorec.jobs.cli import JOBS, build_parser, main

from .conftest import ROOT


def readme_commands() -> list[list[str]]:
    """The argument lists after ``protorec`` of README's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        line = ""
        for raw in block.splitlines():
            if raw.lstrip().startswith("#"):
                continue
            code = raw.split(" #")[0].rstrip()  # a trailing comment
            line += " " + code.removesuffix("\\")
            if code.endswith("\\"):
                continue
            words = shlex.split(line)
            line = ""
            if words and words[0].endswith("protorec"):
                commands.append(words[1:])
    return commands


COMMANDS = readme_commands()


def test_readme_names_only_files_that_exist():
    text = (ROOT / "README.md").read_text()
    named = set(
        re.findall(r"\b(?:docs|benchmarks|docker|jobs|models|pipeline|tests)/[\w./-]+", text)
    )
    files = {n.rstrip(".") for n in named if re.search(r"\.(md|py|sh)$", n.rstrip("."))}
    assert "docs/design.md" in files
    assert sorted(f for f in files if not (ROOT / f).is_file()) == []


def test_readme_shows_every_verb():
    assert {c[0] for c in COMMANDS} == set(JOBS)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_readme_command_parses(argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"README: protorec {' '.join(argv)}: {capsys.readouterr().err.strip()}")
    assert args.command == argv[0]


def _command(verb: str) -> list[str]:
    (argv,) = [c for c in COMMANDS if c[0] == verb]
    return argv


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def test_readme_simulate_and_report_run_at_small_sizes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    simulate = _set(_command("simulate"), "--days", "1")
    assert main(simulate) == 0
    out = simulate[simulate.index("--out") + 1]
    assert (tmp_path / out / "date=2026-01-01").is_dir()
    # before any daily run, report refuses in one line, exit 2
    assert main(_command("report")) == 2
    assert "protorec report" in capsys.readouterr().err


def test_readme_plan_runs_at_a_small_size(capsys):
    assert main(_set(_command("plan"), "--world-size", "2")) == 0
    out = capsys.readouterr().out
    assert "sharding type" in out and "user" in out
