"""Checks of a job's command-line values that run before any model is built.

A wrong day or data set found by the loader costs the model's set-up first and ends in a
traceback; found here it is one line naming the flag, the value and what to do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from protorec.pipeline.contract import parse_day_range
from protorec.pipeline.day_reader import day_files


class InputError(ValueError):
    """A command-line value that cannot work: ``--flag: 'value' problem (fix)``."""

    def __init__(self, flag: str, value: object, message: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {str(value)!r} {message}")


def days_of(flag: str, text: str) -> list[dt.date]:
    """Every day of ``text`` (``YYYY-MM-DD`` or ``A..B``, inclusive), or :class:`InputError`.

    >>> days_of("--test", "2026-01-30..2026-02-01")[-1]
    datetime.date(2026, 2, 1)
    >>> try:
    ...     days_of("--test", "2019-13-45")
    ... except InputError as exc:
    ...     print(exc)
    --test: '2019-13-45' is not a date (YYYY-MM-DD or A..B)
    """
    try:
        lo, hi = parse_day_range(text)
    except ValueError as exc:
        if "ends before it starts" in str(exc):
            raise InputError(
                flag, text, "ends before it starts (write the earlier day first: A..B with A <= B)"
            ) from None
        raise InputError(flag, text, "is not a date (YYYY-MM-DD or A..B)") from None
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]


def check_days(dataset: str | Path | None, ranges: Sequence[tuple[str, str]]) -> None:
    """Check every ``(flag, A..B)`` in ``ranges`` and that ``dataset`` holds each day.

    Raises:
        InputError: naming the first bad flag (``--dataset`` for a missing data set).
    """
    days = {flag: days_of(flag, text) for flag, text in ranges}
    dataset = check_dataset(dataset)
    for flag, text in ranges:
        missing = [d for d in days[flag] if not day_files(dataset, d)]
        if missing:
            raise InputError(
                flag,
                text,
                f"has {len(missing)} day(s) without data in "
                f"{dataset}, first {missing[0]} (present: {_present(dataset)})",
            )


def check_dataset(dataset: str | Path | None) -> Path:
    """``dataset`` as a path, or :class:`InputError` unless it names a folder."""
    if not dataset:
        raise InputError(
            "--dataset", "", "is not set (pass --dataset DIR or set data.dataset in the config)"
        )
    if not Path(dataset).is_dir():
        raise InputError(
            "--dataset",
            dataset,
            "is not a folder (make one with `protorec simulate --out DIR` or `protorec ingest`)",
        )
    return Path(dataset)


def _present(dataset: str | Path) -> str:
    """The data set's days as ``first..last (N days)``, for messages."""
    days = sorted(
        p.name.removeprefix("date=")
        for p in Path(dataset).glob("date=*")
        if any(p.glob("*.parquet"))
    )
    return f"{days[0]}..{days[-1]} ({len(days)} days)" if days else "none"
