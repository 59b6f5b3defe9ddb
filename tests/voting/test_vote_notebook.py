"""The example notebook runs top to bottom on a synthetic run and shows pairs."""

from __future__ import annotations

import nbformat
from helpers.configs import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "vote_example.ipynb"


def test_vote_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("RUN_DIR", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "majority: kept 60 of 60 pairs" in text
    assert "showed 4 pairs" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the pair images were not drawn"
