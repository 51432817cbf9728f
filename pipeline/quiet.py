"""Warnings and log lines that third-party libraries print on every run and a user cannot act on.

TorchRec calls torch APIs that torch has deprecated (ShardedTensor, DDP's
``broadcast_buffers``) and warns about its own planner defaults; each run printed them
between protorec's lines. They are silenced at their source modules and loggers only, so
the same warning raised from protorec's code (something to fix here) still shows, and
``--log-level debug`` (:func:`setup_logging`) shows the log lines again.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings

#: (category, regex of the module the warning is attributed to, regex of the message's
#: start). torch.distributed.checkpoint warns on every ShardedTensor it saves or loads:
#: TorchRec's sharded tables are ShardedTensors, which protorec does not choose.
THIRD_PARTY = (
    (FutureWarning, r"torchrec(\..*)?$", ""),
    (DeprecationWarning, r"torchrec(\..*)?$", ""),
    (DeprecationWarning, r"fbgemm_gpu(\..*)?$", ""),
    (
        FutureWarning,
        r"torch\.distributed\.checkpoint(\..*)?$",
        "Please use DTensor instead and we are deprecating ShardedTensor",
    ),
)

#: (logger, start of the message): WARNING lines about TorchRec's and torch's own choices.
#: The planner's topology is built directly on purpose (pipeline/trainer.py: the sizes
#: come from the config, not a probe of the machine); the dense-size estimate only matters
#: to a dry run; ``is_fx_tracing`` is called inside TorchRec.
THIRD_PARTY_LOGS = (
    ("torchrec.distributed.planner.types", "The topology was constructed directly"),
    (
        "torchrec.distributed.planner.storage_reservations",
        "There is a known issue with TorchRec's dense tensor size",
    ),
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
)

#: ``--log-level`` choices.
LOG_LEVELS = ("debug", "info", "warning")


def quiet_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY`'s warnings in this process (call before the work)."""
    for category, module, message in THIRD_PARTY:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


class _DebugOnly(logging.Filter):
    """Drops records starting with ``prefix`` unless protorec logs at DEBUG."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        return logging.getLogger("protorec").isEnabledFor(logging.DEBUG)


def quiet_third_party_logs() -> None:
    """Hide :data:`THIRD_PARTY_LOGS` at their loggers unless ``--log-level debug``."""
    for name, prefix in THIRD_PARTY_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DebugOnly) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DebugOnly(prefix))


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Register ``--log-level`` on a job's parser."""
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="protorec's log level (info: rank 0's INFO lines, every rank's warnings); "
        "debug: every rank, with TorchRec's and fbgemm's INFO lines and the third-party "
        "notices hidden by default",
    )


def setup_logging(level: str, fmt: str = "%(asctime)s %(levelname)s %(message)s") -> None:
    """Log protorec's lines at ``level``, everything else at WARNING (all at ``debug``).

    TorchRec and fbgemm log every planning and kernel choice at INFO. Under torchrun every
    rank logs the same INFO lines: at ``info`` only rank 0 (``RANK``) does, the others
    log warnings and errors. ``force``: importing torchrec has configured the root logger
    already.
    """
    if level == "info" and int(os.environ.get("RANK", "0")) != 0:
        level = "warning"
    logging.basicConfig(
        level=logging.DEBUG if level == "debug" else logging.WARNING, format=fmt, force=True
    )
    logging.getLogger("protorec").setLevel(getattr(logging, level.upper()))
