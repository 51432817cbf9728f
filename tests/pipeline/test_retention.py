"""Retention keeps the newest N checkpoints and exports, and what resumes and warm starts need."""

import json

from protorec.pipeline.retention import prune


def _day_dir(path, name):
    (path / name).mkdir(parents=True)
    (path / name / "meta.json").write_text(json.dumps({"date": name}))


def test_prune_keeps_newest_last_good_partials_and_later_days(tmp_path):
    ckpt, exports = tmp_path / "checkpoints", tmp_path / "exports"
    for day in range(1, 8):
        _day_dir(ckpt, f"2026-01-0{day}")
    _day_dir(ckpt, "2026-01-06.partial")
    for day in (1, 2, 3):  # days 4-6 were refused by the gate: no export
        _day_dir(exports, f"2026-01-0{day}")
    (tmp_path / "LAST_GOOD").write_text("2026-01-03\n")

    removed = prune(tmp_path, "2026-01-06", keep_checkpoints=2, keep_exports=1)

    assert removed == {
        "checkpoints": ["2026-01-01", "2026-01-02", "2026-01-04"],
        "exports": ["2026-01-01", "2026-01-02"],
    }
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "2026-01-03",
        "2026-01-05",
        "2026-01-06",
        "2026-01-06.partial",
        "2026-01-07",
    ]
    assert sorted(p.name for p in exports.iterdir()) == ["2026-01-03"]


def test_zero_keeps_everything(tmp_path):
    for day in range(1, 4):
        _day_dir(tmp_path / "checkpoints", f"2026-01-0{day}")
    assert prune(tmp_path, "2026-01-03", 0, 0) == {"checkpoints": [], "exports": []}
    assert len(list((tmp_path / "checkpoints").iterdir())) == 3
