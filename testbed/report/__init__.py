"""Network quality assessment reports from run directories (docs/results-format.md).

`build_report(run_dir, out_dir=None)` writes report.md, report.html, figures/ and summary.csv;
`compare_runs(run_a, run_b, out_dir)` writes the difference of two runs. Both read files only.
"""

from .build import ReportPaths, build_report
from .compare import compare_runs

__all__ = ["ReportPaths", "build_report", "compare_runs"]
