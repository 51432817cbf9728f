"""Warnings that third-party libraries print on every run and a user cannot act on.

TorchRec calls torch APIs that torch has deprecated (ShardedTensor, DDP's
``broadcast_buffers``) and warns about its own planner defaults; each run printed them
between protorec's lines. They are silenced at their source modules only, so the same
warning raised from protorec's code (something to fix here) still shows.
"""

from __future__ import annotations

import warnings

#: (category, regex of the module the warning is attributed to).
THIRD_PARTY = (
    (FutureWarning, r"torchrec(\..*)?$"),
    (DeprecationWarning, r"torchrec(\..*)?$"),
    (DeprecationWarning, r"fbgemm_gpu(\..*)?$"),
)


def quiet_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY`'s warnings in this process (call before the work)."""
    for category, module in THIRD_PARTY:
        warnings.filterwarnings("ignore", category=category, module=module)
