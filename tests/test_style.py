"""House style, checked: ruff's lint and format (pyproject.toml), and modules of a readable size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["seglib", "tests", "benchmarks", "notebooks"]
MAX_MODULE_LINES = 600


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_lint_is_clean():
    result = ruff("check", *CHECKED, "--output-format", "concise")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_is_clean():
    result = ruff("format", "--check", "seglib", "tests", "benchmarks", *map(str, (ROOT / "notebooks").glob("*.py")))
    assert result.returncode == 0, "run `ruff format` (the files it would change):\n" + result.stdout[-4000:]


def test_the_check_can_fail(tmp_path):
    """An unused import and a badly formatted line are caught with the project's settings."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nx = {  'a':1 }\n")
    config = ["--config", str(ROOT / "pyproject.toml")]
    assert ruff("check", *config, str(bad)).returncode != 0
    assert ruff("format", *config, "--check", str(bad)).returncode != 0


@pytest.mark.parametrize("module", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "seglib").rglob("*.py")))
def test_no_module_over_600_lines(module):
    lines = len((ROOT / module).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines; split it by concern (at most {MAX_MODULE_LINES})"
