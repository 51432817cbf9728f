"""Third-party warnings and notices are silenced at their sources, and nowhere else."""

import logging
import warnings

from protorec.pipeline.quiet import (
    THIRD_PARTY_LOGS,
    quiet_third_party_logs,
    quiet_third_party_warnings,
    setup_logging,
)


def test_third_party_warnings_are_ignored_at_their_source_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        for module, category in [
            ("torchrec.optim.clipping", FutureWarning),
            ("torchrec", DeprecationWarning),
            ("fbgemm_gpu.split_table_batched_embeddings_ops", DeprecationWarning),
            ("protorec.pipeline.trainer", FutureWarning),  # ours: to be fixed, so shown
            ("torchrec_extra", FutureWarning),  # another package
            ("torchrec.optim.clipping", UserWarning),  # another kind
        ]:
            warnings.warn_explicit(
                f"{module} {category.__name__}", category, "f.py", 1, module=module
            )
        dcp = "torch.distributed.checkpoint.planner_helpers"
        for message in (
            "Please use DTensor instead and we are deprecating ShardedTensor.",
            "another deprecation",  # torch's other warnings there still show
        ):
            warnings.warn_explicit(message, FutureWarning, "f.py", 1, module=dcp)
    assert [str(w.message) for w in caught] == [
        "protorec.pipeline.trainer FutureWarning",
        "torchrec_extra FutureWarning",
        "torchrec.optim.clipping UserWarning",
        "another deprecation",
    ]


def test_third_party_notices_are_hidden_at_their_loggers_unless_log_level_debug():
    quiet_third_party_logs()
    quiet_third_party_logs()  # twice: still one filter per logger
    lines = [(name, prefix + " ...") for name, prefix in THIRD_PARTY_LOGS]
    lines.append(("torchrec.distributed.planner.types", "another planner warning"))
    protorec = logging.getLogger("protorec")
    before = protorec.level
    shown: dict[str, list[str]] = {}
    try:
        for level in ("info", "debug"):
            setup_logging(level)
            records: list[logging.LogRecord] = []
            collect = logging.Handler()
            collect.emit = records.append  # type: ignore[method-assign]
            # At the source loggers: torch's logger does not propagate to the root.
            for name, message in lines:
                logging.getLogger(name).addHandler(collect)
                logging.getLogger(name).warning(message)
                logging.getLogger(name).removeHandler(collect)
            shown[level] = [r.getMessage() for r in records]
    finally:
        protorec.setLevel(before)
    assert shown["info"] == ["another planner warning"]  # only the known notices go
    assert shown["debug"] == [message for _, message in lines]
    assert len(logging.getLogger(THIRD_PARTY_LOGS[0][0]).filters) == 1


def test_info_lines_come_from_rank_0_only_unless_debug(monkeypatch):
    protorec = logging.getLogger("protorec")
    before = protorec.level
    levels = {}
    try:
        for rank, level in (("0", "info"), ("1", "info"), ("1", "debug"), ("1", "warning")):
            monkeypatch.setenv("RANK", rank)
            setup_logging(level)
            levels[rank, level] = protorec.getEffectiveLevel()
    finally:
        protorec.setLevel(before)
    assert levels == {
        ("0", "info"): logging.INFO,
        ("1", "info"): logging.WARNING,
        ("1", "debug"): logging.DEBUG,
        ("1", "warning"): logging.WARNING,
    }
