"""Exports: from the sharded model, checksummed, atomic, loaded without a process group."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.export import ExportError, export_model, load_export, verify_export
from protorec.pipeline.job_config import load_config
from protorec.pipeline.loader import table_to_batch
from protorec.pipeline.manifest import SIGNING_KEY_ENV, sha256_file, sign
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.trainer import shard_model, train_pass


def _batch(config, n, seed):
    rng = np.random.default_rng(seed)
    sim = config.simulator
    table = pa.table(
        {
            "user_id": rng.integers(0, sim.num_users, n),
            "item_id": rng.integers(0, sim.num_items, n),
            "author_id": rng.integers(0, sim.num_authors, n),
            "category_id": rng.integers(0, sim.num_categories, n),
            "user_segment": rng.integers(0, sim.num_user_segments, n),
            "scenario": rng.choice(config.data.scenarios, n).astype(np.int32),
            "click": rng.integers(0, 2, n).astype(np.int8),
            "watch_ms": rng.uniform(0, 3e4, n),
            "duration_ms": rng.uniform(1e3, 6e4, n),
            "user_activity": rng.uniform(0, 100, n),
            "item_popularity": rng.uniform(0, 1000, n),
            "ts_ms": np.full(n, 1_767_225_600_000, dtype=np.int64),
        }
    )
    return table_to_batch(table, config)


def _refuse(*args, **kwargs):
    raise RuntimeError("data-dependent control flow")


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    torch.manual_seed(0)
    config = load_config("simulator")
    ctx = init_distributed("cpu")
    try:
        sharded = shard_model(build_model(config, "meta"), ctx, config.train, 64)
        train_pass(
            sharded, [_batch(config, 64, s) for s in range(5)], ctx, config.train, progress=False
        )
        probe = _batch(config, 300, 99)
        expected = sharded.module.predict(probe)["click_prob"]
        rng = torch.get_rng_state()
        directory = export_model(
            sharded, config, tmp_path / "exports" / "2026-01-01", metrics={"auc": 0.5}
        )
        # only rank 0 writes: what it draws there would set the ranks' streams apart
        assert torch.equal(torch.get_rng_state(), rng), "the export moved the global RNG"
        monkeypatch.setenv(SIGNING_KEY_ENV, "key-one")  # a second copy, signed
        export_model(sharded, config, tmp_path / "signed" / "2026-01-01")
        monkeypatch.delenv(SIGNING_KEY_ENV)
        with monkeypatch.context() as patch:  # a third, of a model torch.export refuses
            patch.setattr(torch.export, "export", _refuse)
            export_model(sharded, config, tmp_path / "untraceable" / "2026-01-01")
    finally:
        shutdown_distributed()
    return config, directory, probe, expected


def test_export_predicts_as_the_trained_model(trained):
    config, directory, probe, expected = trained
    loaded_config, model = load_export(directory)
    assert loaded_config == config
    torch.testing.assert_close(model.predict(probe)["click_prob"], expected, rtol=0, atol=0)
    manifest = verify_export(directory)
    assert set(manifest["files"]) == {"model.pt", "model.pt2", "config.yaml", "metrics.json"}
    assert "inference_skipped" not in manifest
    scores = torch.export.load(directory / "model.pt2").module()(
        [probe.sparse[f].values() for f in model.feature_names],
        [probe.sparse[f].offsets()[:-1].long() for f in model.feature_names],
        probe.dense,
        probe.scenario,
        probe.duration_ms,
    )
    torch.testing.assert_close(scores["click_prob"], expected, rtol=0, atol=1e-6)
    assert json.loads((directory / "metrics.json").read_text()) == {"auc": 0.5}
    # nothing left beside it: the temporary directory was renamed into place
    assert [p.name for p in directory.parent.iterdir()] == ["2026-01-01"]


def test_tampered_export_is_refused(trained):
    _, directory, _, _ = trained
    weights = directory / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="model.pt: sha256 differs"):
        load_export(directory)
    (directory / "manifest.json").unlink()
    with pytest.raises(ExportError, match="no readable manifest.json"):
        verify_export(directory)


def test_export_manifest_signature(trained, monkeypatch):
    """With a key set, an unsigned manifest, another key's or a consistent forgery is refused."""
    _, directory, _, _ = trained
    manifest_path = directory / "manifest.json"
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-one")
    with pytest.raises(ExportError, match="unsigned"):
        load_export(directory)
    manifest_path.write_text(json.dumps(sign(json.loads(manifest_path.read_text()))))
    assert "hmac" in verify_export(directory)
    load_export(directory)

    metrics = directory / "metrics.json"
    metrics.write_text(json.dumps({"auc": 0.99}))  # edited, and its manifest entry too
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["metrics.json"] = {
        "bytes": metrics.stat().st_size,
        "sha256": sha256_file(metrics),
    }
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="HMAC does not match"):
        verify_export(directory)
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-two")
    with pytest.raises(ExportError, match="HMAC does not match"):
        verify_export(directory)


def test_export_signed_when_key_set(trained, tmp_path, monkeypatch):
    """export_model signs with the key set; that export loads under it and no other."""
    signed = tmp_path / "signed" / "2026-01-01"
    assert "hmac" in json.loads((signed / "manifest.json").read_text())
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-one")
    load_export(signed)
    monkeypatch.setenv(SIGNING_KEY_ENV, "key-two")
    with pytest.raises(ExportError, match="HMAC does not match"):
        load_export(signed)


def test_export_without_a_program_when_torch_export_fails(trained):
    config, directory, probe, expected = trained
    untraceable = directory.parent.parent / "untraceable" / "2026-01-01"
    manifest = verify_export(untraceable)
    assert set(manifest["files"]) == {"model.pt", "config.yaml"}
    assert manifest["inference_skipped"] == "RuntimeError: data-dependent control flow"
    assert not (untraceable / "model.pt2").exists()
    _, model = load_export(untraceable)
    torch.testing.assert_close(model.predict(probe)["click_prob"], expected, rtol=0, atol=0)
