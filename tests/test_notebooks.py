"""Every notebook in notebooks/ runs top to bottom with the real default models.

The notebooks' `parameters` cell is overridden (papermill style: a cell injected after it) with a
six-question exemplar set, 3 of the demo questions in the table and 3 benchmark cases, so the whole
file runs in a few minutes on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA

NOTEBOOKS = ROOT / "notebooks"
OVERRIDES = {
    "01_quickstart.ipynb": "MAX_QUESTIONS = 3\nEPOCHS = 1",
    "02_stale_vs_fresh.ipynb": "N_CASES = 3",
}


def test_notebooks_are_stored_without_outputs():
    import nbformat

    books = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [b.name for b in books] == sorted(OVERRIDES)
    for path in books:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name


def execute(path: Path, overrides: str, tmp_path: Path) -> list[dict]:
    """Run the notebook with nbclient (the venv's python3 kernel, cwd notebooks/); all its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]}))
    # No cell timeout: a busy machine makes the run slower, never a failure.
    NotebookClient(nb, kernel_name="python3", timeout=None, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    (tmp_path / path.name).write_text(nbformat.writes(nb), encoding="utf-8")  # kept for a look on failure
    return [out for cell in nb.cells for out in cell.get("outputs", [])]


def texts_of(outputs: list[dict]) -> list[str]:
    """Streams and text/* representations (plain, HTML, Markdown) of the outputs."""
    texts = [out.get("text", "") for out in outputs]
    return texts + [str(v) for out in outputs for k, v in out.get("data", {}).items() if k.startswith("text/")]


@pytest.fixture
def small_exemplars(tmp_path: Path, exemplars_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jupyter/IPython state under tmp_path; the conftest's six exemplars instead of the shipped set."""
    for var, sub in [("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return exemplars_file


@pytest.mark.integration
def test_quickstart_answers_with_the_fresh_value_and_cites_it(small_exemplars, tmp_path):
    start = time.perf_counter()
    texts = texts_of(execute(NOTEBOOKS / "01_quickstart.ipynb",
                             f"{OVERRIDES['01_quickstart.ipynb']}\nEXEMPLARS = {str(small_exemplars)!r}", tmp_path))
    html = "\n".join(t for t in texts if "kupdate-answer" in t)
    # The Brindlemoor CEO changed in 2025: the fresh name is answered and its note cited, the old one struck.
    assert "Renzo Halbrook" in html and "brindlemoor-2025.md" in html and "2025-02-10" in html
    assert "<s>" in html and "outdated" in html
    assert any("Trondheim" in t for t in texts)  # the %%ask cell
    assert any(" promoted: no-memory recall" in t or " rejected: no-memory recall" in t for t in texts)
    print(f"01_quickstart ran in {time.perf_counter() - start:.0f} s")


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED_DATA / "counterfact-edit.json").exists(), reason="needs ../shared/data")
def test_stale_vs_fresh_reports_metrics_and_plots(small_exemplars, tmp_path):
    start = time.perf_counter()
    outputs = execute(NOTEBOOKS / "02_stale_vs_fresh.ipynb",
                      f"{OVERRIDES['02_stale_vs_fresh.ipynb']}\nEXEMPLARS = {str(small_exemplars)!r}", tmp_path)
    assert any("image/png" in out.get("data", {}) for out in outputs), "the plot is displayed"
    table = next(t for t in texts_of(outputs) if "| mode | fresh recall |" in t)
    assert all(f"| {mode} |" in table for mode in ("base", "rag", "gated_rag")) and "3 cases" in table
    print(f"02_stale_vs_fresh ran in {time.perf_counter() - start:.0f} s")

