"""The paper table: collect training jobs -> ``table.csv`` / ``table.md`` + plots.

Typical use::

    rows = collect(["outputs/paper_table/runs"])   # every job dir below, recursively
    write_report(rows, "outputs/paper_table")       # table.csv, curves.csv, table.md, PNGs

or ``python -m rvc_lora.report outputs/paper_table/runs --out outputs/paper_table``.
"""

from rvc_lora.report.claims import Claim, check_claims
from rvc_lora.report.collect import ReportError, Row, collect, find_job_dirs, read_job
from rvc_lora.report.table import build_table, read_csv
from rvc_lora.report.write import markdown_document, write_report

__all__ = [
    "Claim",
    "ReportError",
    "Row",
    "build_table",
    "check_claims",
    "collect",
    "find_job_dirs",
    "markdown_document",
    "read_csv",
    "read_job",
    "write_report",
]
