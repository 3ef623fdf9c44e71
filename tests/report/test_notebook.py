"""notebooks/paper_table.ipynb runs headless on the fixture table and draws its three plots."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from rvc_lora.report import collect, write_report
from tests.report.jobs import paper_jobs

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "paper_table.ipynb"


@pytest.mark.slow  # a kernel start plus the package import: over 5 s on 2 cores
def test_notebook_executes_on_fixture_table(tmp_path: Path, monkeypatch) -> None:
    paper_jobs(tmp_path / "jobs")
    write_report(collect([tmp_path / "jobs"]), tmp_path / "out")
    monkeypatch.setenv("PAPER_TABLE_CSV", str(tmp_path / "out" / "table.csv"))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "6 records, 18 validation points" in text
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("| lora r8 decoder |" in m for m in markdown)
    assert any("## Claims" in m for m in markdown)
    images = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3 and all(len(png) > 10_000 for png in images)  # base64 text
