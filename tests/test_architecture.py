"""The layering (pyproject.toml's import-linter contracts): no circle, no import up the data path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_layer_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_build(tmp_path):
    """The check can fail: the palette (the bottom layer) importing the report is caught."""
    shutil.copytree(ROOT / "seglib", tmp_path / "seglib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    palette = tmp_path / "seglib" / "palette.py"
    palette.write_text(palette.read_text() + "\nimport seglib.report  # noqa: E402\n")
    result = lint(tmp_path)
    assert result.returncode != 0 and "seglib follows the data path BROKEN" in result.stdout
    assert "seglib.palette -> seglib.report" in result.stdout
