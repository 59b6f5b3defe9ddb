"""`build_report(run_dir)`: collect every stage, fetch the sampled images, write `<run>/report/index.html`.

The page and its images are written into a staging directory that replaces `<run>/report/` whole, so a reader
never sees half a report and a failed build leaves the previous one as it was.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from pipeline.io import atomic_directory
from pipeline.paths import RunPaths
from pipeline.reporting.collect import (
    collect_candidates,
    collect_eval,
    collect_pairs,
    collect_run,
    collect_training,
    pairs_strategy,
    stage_dirs,
    strategy_dirs,
)
from pipeline.reporting.images import ImageFolder, fetch_images
from pipeline.reporting.render import StageView, render_page
from pipeline.reporting.sampling import ReportLimits

PAGE = "index.html"


def report_dir(run_dir: str | Path) -> Path:
    return RunPaths(Path(run_dir)).report


def build_report(run_dir: str | Path, limits: ReportLimits | None = None) -> Path:
    """Write the report of a run directory; returns the path of its `index.html`. Parts not run yet say so."""
    started = time.perf_counter()
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory not found: {root}")
    limits = limits or ReportLimits()
    run = collect_run(root)
    stages: list[StageView] = []
    wanted: dict[Path, set[str]] = defaultdict(set)  # table directory → image ids the page shows
    for label, paths in stage_dirs(root):
        candidates = collect_candidates(paths, limits)
        strategy = pairs_strategy(paths, run.config)
        pairs = collect_pairs(paths, strategy, limits) if strategy else None
        training = [
            t for s in strategy_dirs(paths.root / "train") if (t := collect_training(paths, s, limits))
        ]
        stages.append(StageView(label, candidates, pairs, training))
        if candidates:
            wanted[paths.candidates] |= candidates.image_ids()
        if pairs:
            wanted[paths.candidates] |= pairs.image_ids()
    evaluation = collect_eval(root, limits)
    if evaluation:
        wanted[evaluation.directory / "candidates"] |= evaluation.image_ids()

    target = report_dir(root)
    with atomic_directory(target) as staging:
        folder = ImageFolder(staging, limits.thumb_px)
        images: dict[str, str | None] = {}
        for table_dir, ids in wanted.items():
            images |= folder.add_all(fetch_images(table_dir, ids))
        footer = (
            f"Built by <code>python -m pipeline.report {root}</code> on {time.strftime('%Y-%m-%d %H:%M:%S')} in "
            f"{time.perf_counter() - started:.1f} s; {len(folder.written):,} images beside the page."
        )
        html = render_page(run, stages, evaluation, images, limits, footer)
        (staging / PAGE).write_text(html, encoding="utf-8")
    return target / PAGE
