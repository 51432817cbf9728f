"""The prototype report: usage that sums to the plans' mass, global cosine, and a PNG."""

import pytest
import torch

from protorec.models.prototype_report import (
    PrototypeReport,
    plot_prototype_report,
)
from protorec.pipeline.model_factory import build_model


def test_usage_sums_match_the_plans_and_the_png_is_written(tiny_config, synthetic, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config("distproto"), ebc_device="cpu")
    arch = model.dense_arch
    g = torch.Generator().manual_seed(0)
    batches = [synthetic.batch(64, g) for _ in range(3)]
    seen = []
    real = arch.transport

    def recording(out, scenario):
        align = real(out, scenario)
        seen.append(align.plan.double())
        return align

    arch.transport = recording
    report = model.prototype_report(batches, ["a", "b", "c"])
    assert len(seen) == 3 and model.training
    rows = sum(torch.bincount(b.scenario, minlength=3) for b in batches)
    assert report.rows.tolist() == rows.tolist()
    torch.testing.assert_close(report.global_usage, sum(plan[:3, :, :16].sum(1) for plan in seen))
    torch.testing.assert_close(report.scenario_usage, sum(plan[3:, :, :8].sum(1) for plan in seen))
    for s in range(3):  # the usage is all the mass of each scenario's plans
        torch.testing.assert_close(
            report.global_usage[s].sum(), sum(plan[s].sum() for plan in seen)
        )
    cos = report.global_cosine
    # the prototypes are normalised in float32 before the float64 product
    torch.testing.assert_close(cos.diagonal(), torch.ones(16, dtype=cos.dtype), rtol=0, atol=1e-6)
    torch.testing.assert_close(cos, cos.t())
    path = plot_prototype_report(report, tmp_path / "report" / "prototypes.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dead_prototypes_and_collapse_are_reported():
    usage = torch.tensor([[1.0, 1.0, 1.0, 0.001], [0.0, 2.0, 2.0, 0.0]], dtype=torch.float64)
    assert PrototypeReport.dead(usage).tolist() == [1, 2]
    cos = torch.tensor([[1.0, 0.99], [0.99, 1.0]], dtype=torch.float64)
    report = PrototypeReport(["a", "b"], torch.tensor([3, 4]), usage, None, cos)
    assert report.max_off_diagonal_cosine() == pytest.approx(0.99)


def test_only_distproto_models_have_prototypes(tiny_config, synthetic):
    model = build_model(tiny_config("mmoe"), ebc_device="cpu")
    assert model.prototype_report([synthetic.batch(8, torch.Generator().manual_seed(0))]) is None
