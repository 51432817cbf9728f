"""The import root: `protorec.*` is ours, a plain `import ot` is POT, from the repo root."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_import_ot_at_repo_root_is_pot():
    path = _run("import ot; print(ot.__file__)")
    assert "site-packages" in path and Path(path).parent.name == "ot"
    assert not Path(path).is_relative_to(ROOT / "ot")


def test_protorec_ot_is_ours():
    path = _run("import protorec.ot.uot as m; print(m.__file__)")
    assert Path(path).resolve() == (ROOT / "ot" / "uot.py").resolve()


def test_python_m_at_repo_root_keeps_pot():
    # `python -m` puts the working directory first on sys.path: POT must still win.
    out = subprocess.run(
        [sys.executable, "-m", "ot.utils"], cwd=ROOT, capture_output=True, text=True
    )
    assert "No module named ot.utils" not in out.stderr
