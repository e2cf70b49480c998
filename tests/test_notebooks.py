"""The four notebooks: pairs in sync, thin cells, one parameters cell, the Colab cell; and the
quick pipeline executed headless with papermill on the embedded default dataset."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from seglib import colab, report
from seglib.report.numbers import fmt
from seglib.run import NOTEBOOKS as NAMES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MAX_CELL_LINES = 15


def cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def code_cells(name: str) -> list:
    return [c for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if c.cell_type == "code"]


def test_every_notebook_is_a_pair():
    stems = {p.stem for p in NOTEBOOKS.glob("*.py")} | {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert stems == set(NAMES)
    for stem in stems:
        assert (NOTEBOOKS / f"{stem}.py").is_file() and (NOTEBOOKS / f"{stem}.ipynb").is_file(), stem


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync(name):
    """jupytext's reading of the .py and of the .ipynb must agree cell by cell (run `make sync`)."""
    from_py = cells(jupytext.read(NOTEBOOKS / f"{name}.py"))
    from_ipynb = cells(jupytext.read(NOTEBOOKS / f"{name}.ipynb"))
    assert from_py == from_ipynb, f"notebooks/{name}.py and .ipynb differ: run `jupytext --sync notebooks/{name}.py`"


def test_sync_check_catches_an_edit(tmp_path):
    edited = (
        (NOTEBOOKS / "04_report.py").read_text().replace("path = report.write_report", "path  = report.write_report")
    )
    (tmp_path / "04_report.py").write_text(edited)
    assert cells(jupytext.read(tmp_path / "04_report.py")) != cells(jupytext.read(NOTEBOOKS / "04_report.ipynb"))


@pytest.mark.parametrize("name", NAMES)
def test_one_upper_case_parameters_cell(name):
    tagged = [c for c in code_cells(name) if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    tree = ast.parse(tagged[0].source)
    names = [t.id for node in tree.body for t in getattr(node, "targets", [])]
    assert names and all(n.isupper() for n in names), names
    assert "OUT_DIR" in names


@pytest.mark.parametrize("name", NAMES)
def test_the_parameters_then_the_colab_install_cell_come_first(name):
    """One install setting, SEGLIB_SOURCE, a parameter: Colab users edit it, papermill sets it."""
    parameters, install = code_cells(name)[:2]
    assert "parameters" in parameters.metadata.get("tags", ())
    assert f'SEGLIB_SOURCE = "{colab.GIT_SOURCE}"' in parameters.source
    assert {"PROFILE", "OUT_DIR", "SEGLIB_SOURCE"} <= set(re.findall(r"^([A-Z_]+) =", parameters.source, re.M))
    assert install.source.strip() == colab.install_cell().strip()


@pytest.mark.parametrize("name", NAMES)
def test_cells_are_thin_and_badge_present(name):
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source != colab.install_cell():
            assert len(cell.source.strip().splitlines()) <= MAX_CELL_LINES, (
                f"{name}: move logic into seglib:\n{cell.source}"
            )
    assert colab.badge(name) in nb.cells[0].source


def test_install_commands_keep_numpy_and_install_nni_and_patchify_without_deps():
    install, no_deps = colab.install_commands("git+https://example.org/seglib.git")
    assert install == 'pip install -q "seglib[colab] @ git+https://example.org/seglib.git"'
    assert no_deps == "pip install -q --no-deps nni==3.0 patchify==0.2.3"
    assert "YOUR-GITHUB-USER" in colab.REPOSITORY_URL, "placeholder URL: change it in one place, seglib/colab.py"


def test_setup_outside_colab_changes_nothing():
    assert not colab.in_colab()
    assert colab.setup(None, "quick") == ("runs/quick", None)
    assert colab.setup("/runs/mine", "full", "/some/data") == ("/runs/mine", "/some/data")


def test_the_download_command_prints_only_the_dataset_folder(monkeypatch, capsys, tmp_path):
    """`DATA=$(python -m seglib.colab download)` must capture the folder and nothing else."""

    def download():  # stands in for kagglehub's network download; says what it does, as the real one does
        print("Kaggle credentials from: none (public download)")
        return tmp_path / "Semantic segmentation dataset"

    monkeypatch.setattr(colab, "download_dataset", download)
    assert colab.main(["download"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'Semantic segmentation dataset'}\n" and "credentials" in err


IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.mark.notebooks
@pytest.mark.slow
def test_quick_pipeline_runs_all_four_notebooks_headless(tmp_path):
    """The README's main job, smaller, its searches in-process: notebooks on NNI are tested in test_colab
    (each in a fresh runtime, 03 killed and resumed), and each engine's search in the hpo tests."""
    out = tmp_path / "run"
    smaller = ["-p", "engine=local", "-p", "epochs=2", "-p", "max_patches=120", "-p", "whole_image_tta=False"]
    result = subprocess.run(
        [sys.executable, "-m", "seglib.cli", "run", "--profile", "quick", "--out", str(out), *smaller],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in NAMES:
        assert (out / f"{name}.ipynb").is_file()
    text = (out / "docs" / report.REPORT_NAME).read_text()
    for link in IMAGE_LINK.findall(text):
        assert (out / "docs" / link).is_file(), link
    tuned = json.loads((out / "tuned" / "metrics.json").read_text())
    baseline = json.loads((out / "baseline" / "metrics.json").read_text())
    assert f"Validation Recall:\t{fmt(tuned['val']['recall'])}" in text
    assert f"**{fmt(baseline['test']['mean_iou'])}**" in text
    trials = json.loads((out / "hpo" / "trials.json").read_text())
    assert len(trials["trials"]) > 0
    assert "embedded default dataset" in text and "profile: quick" in text
    whole = json.loads((out / "tuned" / "whole_images.json").read_text())
    assert f"**{fmt(whole['modes']['blend']['mean_iou'])}**" in text  # whole held-out images, scored
    assert list(whole["modes"]) == ["tiles", "blend"], "whole_image_tta=False scores no 8-fold average"
