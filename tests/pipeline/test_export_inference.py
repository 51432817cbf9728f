"""model.pt2: every variant's scoring function, loaded and run where protorec cannot be imported."""

import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.export import INFERENCE_INPUTS, save_inference_program
from protorec.pipeline.job_config import load_config
from protorec.pipeline.loader import needed_columns, table_to_batch
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.refresh import refresh_watch_head
from protorec.pipeline.simulator import simulate
from protorec.pipeline.variants import apply_overrides, variant_config

DAY = dt.date(2026, 1, 1)
#: Every backbone, the prototype variants and watch heads of both kinds (plain, tables, OT).
VARIANTS = (
    "shared_bottom",
    "mmoe",
    "mmoe_scenario_gates",
    "ple",
    "star",
    "distproto",
    "gpdnet",
    "distproto_encoding_towers",
    "tr",
    "d2q",
    "tpm",
    "prowtp",
    "prowtp_ratio",
    "mean_ratio",
)
TINY = {"model.mmoe.num_experts": 2, "model.mmoe.expert_hidden": [16], "model.tower.hidden": [8]}

# Runs under `python -I` with protorec, TorchRec and fbgemm made unimportable: loads each
# program, scores the probe and its first row alone, and saves the outputs.
SCORE = textwrap.dedent("""
    import json, sys
    sys.modules.update(dict.fromkeys(["protorec", "torchrec", "fbgemm_gpu"]))
    try:
        import protorec
    except ImportError:
        pass
    else:
        raise SystemExit("protorec is importable here")
    import torch

    root, names = sys.argv[1], sys.argv[2:]
    inputs = torch.load(f"{root}/inputs.pt", weights_only=True)
    out = {}
    for name in names:
        described = {"inputs.json": ""}
        program = torch.export.load(f"{root}/{name}.pt2", extra_files=described)
        score = program.module()
        args = inputs[name]
        one = ([v[: o[1]] for v, o in zip(args[0], args[1])],
               [o[:1] for o in args[1]], *(a[:1] for a in args[2:]))
        out[name] = {"all": score(*args), "one": score(*one),
                     "outputs": json.loads(described["inputs.json"])["outputs"]}
    torch.save({k: {"all": v["all"], "one": v["one"]} for k, v in out.items()},
               f"{root}/scores.pt")
    json.dump({k: v["outputs"] for k, v in out.items()}, open(f"{root}/outputs.json", "w"))
    assert "torchrec" not in sys.modules or sys.modules["torchrec"] is None
""")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Each variant built, its watch statistics fitted, its program saved; the probe's scores."""
    root = tmp_path_factory.mktemp("inference")
    base = apply_overrides(load_config("simulator"), TINY)
    sim = dataclasses.replace(base.simulator, rows_per_day=2000)
    simulate(root / "data", DAY, 1, sim, base.data.scenarios, progress=False)
    reader = DayReader(root / "data", [DAY])
    rows = reader.read(needed_columns(base)).slice(0, 300)
    inputs, expected = {}, {}
    for name in VARIANTS:
        config = variant_config(base, name)
        torch.manual_seed(0)
        model = build_model(config, "cpu")
        refresh_watch_head(model, reader)
        assert save_inference_program(model, config, root / f"{name}.pt2") is None, name
        probe = table_to_batch(rows, config, day=DAY)
        expected[name] = model.predict(probe)
        # what a server sends: ids and int64 offsets per feature, in the program's order
        inputs[name] = (
            [probe.sparse[f].values() for f in model.feature_names],
            [probe.sparse[f].offsets()[:-1].long() for f in model.feature_names],
            probe.dense,
            probe.scenario,
            probe.duration_ms,
        )
    torch.save(inputs, root / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-I", "-c", SCORE, str(root), *VARIANTS],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    scores = torch.load(root / "scores.pt", weights_only=True)
    return expected, scores, json.loads((root / "outputs.json").read_text())


@pytest.mark.parametrize("name", VARIANTS)
def test_program_scores_as_the_model_without_protorec(programs, name):
    expected, scores, outputs = programs
    got = scores[name]
    assert set(got["all"]) == set(expected[name]) == set(outputs[name])
    assert ("watch_pred_ms" in outputs[name]) == (
        name in ("tr", "d2q", "tpm", "prowtp", "prowtp_ratio", "mean_ratio")
    )
    for key, want in expected[name].items():
        assert got["all"][key].shape == want.shape == (300,)
        # watch times are in ms (1e3..1e5): the same float32 rounding, relative
        tol = {"atol": 1e-6, "rtol": 0} if key == "click_prob" else {"atol": 1e-3, "rtol": 1e-6}
        torch.testing.assert_close(got["all"][key], want, **tol)
        torch.testing.assert_close(got["one"][key], want[:1], **tol)  # a batch of one row
    assert got["all"]["click_prob"].std() > 0


def test_a_model_that_does_not_export_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    config = load_config("simulator")
    model = build_model(config, "cpu")

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this\nsecond line")

    monkeypatch.setattr(torch.export, "export", refuse)
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.export"):
        reason = save_inference_program(model, config, tmp_path / "model.pt2")
    assert reason == "RuntimeError: cannot trace this"
    assert "no model.pt2 for model mmoe (RuntimeError: cannot trace this)" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_watch_head_without_statistics_is_skipped_and_the_mode_kept(tmp_path):
    config = variant_config(apply_overrides(load_config("simulator"), TINY), "d2q")
    model = build_model(config, "cpu")
    reason = save_inference_program(model, config, tmp_path / "model.pt2")
    assert reason is not None and reason.startswith("RuntimeError: D2QHead has no statistics")
    assert model.training and list(tmp_path.iterdir()) == []


def test_the_program_describes_its_inputs(tmp_path):
    config = variant_config(apply_overrides(load_config("simulator"), TINY), "tr")
    model = build_model(config, "cpu")
    assert save_inference_program(model, config, tmp_path / "model.pt2") is None
    described = {INFERENCE_INPUTS: ""}
    torch.export.load(tmp_path / "model.pt2", extra_files=described)
    inputs = json.loads(described[INFERENCE_INPUTS])
    assert [f["name"] for f in inputs["sparse"]] == model.feature_names
    assert [d["column"] for d in inputs["dense"]] == [d.column for d in config.features.dense]
    assert inputs["scenarios"] == config.data.scenarios
    assert inputs["outputs"] == ["click_prob", "watch_pred_ms"]
