"""The folders form a DAG: jobs -> pipeline -> models -> ot, and nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What each layer may import from protorec (itself included).
ALLOWED = {
    "ot": {"ot"},
    "models": {"models", "ot"},
    "pipeline": {"pipeline", "models", "ot", "configs"},
    "jobs": {"jobs", "pipeline", "models", "ot", "configs"},
}


def _protorec_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "protorec" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_no_layer_imports_a_layer_above_it():
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, target in _protorec_imports(path):
                if target not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports protorec.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text(
        "from protorec.pipeline.loader import ContractLoader\nimport protorec.jobs.cli\n"
    )
    assert _protorec_imports(bad) == [(1, "pipeline"), (2, "jobs")]
