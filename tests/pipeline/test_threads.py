"""The thread count a job gives torch: flag, then OMP_NUM_THREADS, then the free cores."""

import argparse
import logging

import pytest
import torch

from protorec.pipeline import threads
from protorec.pipeline.threads import choose_threads, threads_flag


@pytest.mark.parametrize(
    "cores, load, env, want",
    [
        (2, 0.0, {}, 2),  # quiet machine: every core
        (2, 0.3, {}, 2),  # noise in the load average is not a core
        (2, 1.0, {}, 1),  # another process holds a core
        (2, 5.0, {}, 1),  # never fewer than one
        (16, 2.2, {"LOCAL_WORLD_SIZE": "2"}, 7),  # 14 free cores shared by 2 ranks
        (2, 0.0, {"LOCAL_WORLD_SIZE": "4"}, 1),  # more ranks than cores: one each
        (4, 0.0, {"OMP_NUM_THREADS": "junk"}, 4),  # not a number: as if unset
    ],
)
def test_the_default_shares_the_free_cores_among_the_local_ranks(cores, load, env, want):
    choice = choose_threads(None, env, cores, load)
    assert choice.threads == want and not choice.oversubscribed
    assert f"load {load:.2f}" in choice.reason


def test_the_flag_wins_over_the_environment_and_the_environment_over_the_load():
    env = {"OMP_NUM_THREADS": "3"}
    assert choose_threads(None, env, cores=8, load=7.0).threads == 3
    assert "OMP_NUM_THREADS=3" in choose_threads(None, env, cores=8, load=7.0).reason
    assert choose_threads(2, env, cores=8, load=7.0).threads == 2
    assert "--threads=2" in choose_threads(2, env, cores=8, load=7.0).reason


@pytest.mark.parametrize(
    "flag, env, cores, over",
    [
        (2, {}, 2, False),
        (3, {}, 2, True),
        (None, {"OMP_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "2"}, 2, True),
        (None, {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, 2, False),
    ],
)
def test_an_explicit_count_over_the_cores_is_flagged(flag, env, cores, over):
    assert choose_threads(flag, env, cores, load=0.0).oversubscribed is over


def test_set_threads_gives_torch_the_choice_and_logs_why(monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.1, 0.0, 0.0))
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="protorec.pipeline.threads"):
            assert threads.set_threads(None) == 3
            assert torch.get_num_threads() == 3
            assert threads.set_threads(8) == 8
    finally:
        torch.set_num_threads(before)
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert "3 torch thread(s) per process" in info[0].getMessage()
    assert "load 1.10 leaves 3 free" in info[0].getMessage()
    assert any(
        r.levelno == logging.WARNING and "more than the 4 core(s)" in r.getMessage()
        for r in caplog.records
    )


def test_the_flag_takes_whole_numbers_from_one():
    assert threads_flag("4") == 4
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            threads_flag(bad)
