"""Tampered and damaged checkpoints are refused before any byte is deserialised.

A real checkpoint (DCP shards, DCP's pickled ``.metadata``, our ``meta.json`` with the
manifest) of a sharded model, then: a pickle whose payload creates a file put in place of
``.metadata``, one flipped byte in a shard, a truncated shard, a file added, a manifest
unsigned or signed with another key, and a consistent forgery (file and its sha256 both
edited). Each must be refused with a message naming the file, and nothing executed.
"""

import datetime as dt
import hashlib
import json
import logging
import pickle
import shutil

import pytest
import torch

from protorec.pipeline.checkpoint import (
    META,
    CheckpointError,
    find_latest,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.job_config import load_config
from protorec.pipeline.manifest import SIGNING_KEY_ENV
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.trainer import shard_model


@pytest.fixture
def sharded(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    torch.manual_seed(0)
    config = load_config("simulator")
    ctx = init_distributed("cpu")
    try:
        sharded = shard_model(build_model(config, "meta"), ctx, config.train, 64)
        sharded.optimizer.init_state()  # as after training: the optimiser has state to save
        yield sharded
    finally:
        shutdown_distributed()


@pytest.fixture
def ckpt(sharded, tmp_path):
    directory = save_checkpoint(
        sharded,
        tmp_path / "checkpoints" / "2026-01-02",
        {"date": "2026-01-02", "status": "exported"},
    )
    return directory


class _Payload:
    """Unpickling this creates ``path`` (stands for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _shard(directory):
    return next(p for p in directory.iterdir() if p.suffix == ".distcp")


def test_checkpoint_round_trip_lists_every_file(sharded, ckpt):
    meta = json.loads((ckpt / META).read_text())
    assert meta["complete"] is True
    assert {".metadata", _shard(ckpt).name} <= set(meta["files"])
    assert set(meta["files"]) == {p.name for p in ckpt.iterdir()} - {META}
    assert load_checkpoint(sharded, ckpt) == {"date": "2026-01-02", "status": "exported"}
    assert find_latest(ckpt.parent) == ckpt
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]


def test_pickle_in_metadata_is_refused_and_never_run(sharded, ckpt, tmp_path):
    probe = tmp_path / "probe-ran"
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload is real: unpickling runs it
    assert probe.exists()
    marker = tmp_path / "payload-ran"
    (ckpt / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=r"\.metadata"):
        load_checkpoint(sharded, ckpt)
    assert read_meta(ckpt) is None
    assert find_latest(ckpt.parent) is None
    assert not marker.exists()


def test_flipped_shard_byte_is_refused_naming_the_shard(sharded, ckpt, caplog):
    shard = _shard(ckpt)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{shard.name}: sha256 differs"):
        load_checkpoint(sharded, ckpt)
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.checkpoint"):
        assert read_meta(ckpt) is None
    assert shard.name in caplog.text and "refused" in caplog.text


def test_truncated_shard_is_refused_naming_the_shard(sharded, ckpt):
    shard = _shard(ckpt)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: {len(data) // 3} bytes.*truncated"):
        load_checkpoint(sharded, ckpt)


def test_unlisted_file_or_missing_manifest_is_refused(sharded, ckpt):
    (ckpt / "extra.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="extra.pt: not listed"):
        load_checkpoint(sharded, ckpt)
    (ckpt / "extra.pt").unlink()
    meta = json.loads((ckpt / META).read_text())
    del meta["files"]
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no manifest"):
        load_checkpoint(sharded, ckpt)


def test_signed_checkpoint_loads_and_forgeries_are_refused(sharded, tmp_path, monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-one")
    ckpt = save_checkpoint(sharded, tmp_path / "signed", {"date": "2026-01-02"})
    assert "hmac" in json.loads((ckpt / META).read_text())
    assert load_checkpoint(sharded, ckpt) == {"date": "2026-01-02"}

    # A consistent forgery: a shard edited and its size and sha256 in the manifest too.
    forged = tmp_path / "forged"
    shutil.copytree(ckpt, forged)
    shard = _shard(forged)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    meta = json.loads((forged / META).read_text())
    meta["files"][shard.name]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (forged / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="HMAC does not match"):
        load_checkpoint(sharded, forged)

    monkeypatch.setenv(SIGNING_KEY_ENV, "key-two")
    with pytest.raises(CheckpointError, match="HMAC does not match"):
        load_checkpoint(sharded, ckpt)

    monkeypatch.delenv(SIGNING_KEY_ENV)
    unsigned = save_checkpoint(sharded, tmp_path / "unsigned", {"date": "2026-01-02"})
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-one")
    with pytest.raises(CheckpointError, match="unsigned"):
        load_checkpoint(sharded, unsigned)


def test_daily_job_falls_back_past_a_refused_checkpoint(ckpt, caplog):
    """Warm start skips a tampered day (logged, naming the file) for the day before it."""
    from protorec.pipeline.daily import Workdir

    root = ckpt.parent.parent
    older = shutil.copytree(ckpt, ckpt.parent / "2026-01-01")
    for day in ("2026-01-01", "2026-01-02"):
        (root / "exports" / day).mkdir(parents=True)
        (root / "exports" / day / "manifest.json").write_text("{}")
    wd = Workdir(root)
    today = dt.date(2026, 1, 3)
    assert wd.previous_good(today) == ckpt
    (ckpt / ".metadata").write_bytes(b"not the index")
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.checkpoint"):
        assert wd.previous_good(today) == older
    assert f"{ckpt / '.metadata'}" in caplog.text
    shutil.rmtree(older)
    assert wd.previous_good(today) is None  # cold start


def test_warm_start_takes_only_days_whose_export_is_in_place(ckpt):
    """A checkpoint saying "exported" without its export (killed between) is not a source."""
    from protorec.pipeline.daily import Workdir

    root = ckpt.parent.parent
    wd = Workdir(root)
    assert read_meta(ckpt)["status"] == "exported"
    assert wd.previous_good(dt.date(2026, 1, 3)) is None  # no exports/2026-01-02
    (root / "exports" / "2026-01-02").mkdir(parents=True)
    (root / "exports" / "2026-01-02" / "manifest.json").write_text("{}")
    assert wd.previous_good(dt.date(2026, 1, 3)) == ckpt
