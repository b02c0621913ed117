"""The notebooks execute top to bottom (nbclient) with their SMALL budgets.

Marked slow: together they take several minutes on 2 CPU cores (each trains small policies). CI
runs them with ``pytest -m slow tests/test_notebooks.py``. ``DPRL_WRITE_NOTEBOOKS=1`` writes the
executed notebooks (with outputs) back into notebooks/, which is how the committed outputs are made.
"""
from __future__ import annotations

import os

import pytest

from conftest import ROOT

NOTEBOOKS = ["multimodality.ipynb", "critic_inspection.ipynb", "chunk_ablation.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, minari_root):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    first = "".join(nb.cells[1].source) if len(nb.cells) > 1 else ""
    assert "SMALL = True" in first, "the top code cell must set SMALL = True (CI budgets)"
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    if os.environ.get("DPRL_WRITE_NOTEBOOKS"):
        nbformat.write(nb, path)
