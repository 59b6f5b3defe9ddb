"""What people read about a run: one offline HTML page of every stage, and a model card beside trained weights.

Owns `<run>/report/` (the page `index.html` and its `images/`) and the `README.md` model card in every trained
output. Modules:
- `collect`: the run directory read through `RunPaths` and the manifests into plain data (statistics on every row);
- `sampling`: the bounded, seeded choice of what the page shows (prompts, candidates, pairs, items, curve points);
- `images`: the shown images fetched in one scan per table and written beside the page (thumbnails when large);
- `charts`: inline SVG charts; `render`: the HTML page (inline CSS and script, no external assets);
- `build`: `build_report(run_dir)`, the one call the demo, the job and the command line make;
- `model_card`: the Hugging Face model card of a trained output, written by the trainer, refreshed by evaluation.

The command line is `python -m pipeline.report RUN_DIR`.
"""

from pipeline.reporting.build import build_report, report_dir
from pipeline.reporting.sampling import ReportLimits

__all__ = ["ReportLimits", "build_report", "report_dir"]
