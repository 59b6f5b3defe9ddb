"""The report of a run: one HTML page of its candidates, pairs, training and evaluation, openable offline.

    python -m pipeline.report RUN_DIR [--prompts 8] [--pairs 24] [--items 48]

Writes `RUN_DIR/report/index.html` (images beside it in `report/images/`) and prints its path. Statistics use
every row; the page shows a bounded, seeded sample of prompts, pairs and evaluation items, and says so. Parts of
the run that have not run yet are sections that say so. The work is `pipeline.reporting.build_report`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (
    None,
    "",
):  # `python pipeline/report.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.reporting import ReportLimits, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (run.output_dir)")
    defaults = ReportLimits()
    parser.add_argument(
        "--prompts", type=int, default=defaults.prompts, help="prompts whose candidates are shown"
    )
    parser.add_argument(
        "--candidates", type=int, default=defaults.candidates_per_prompt, help="candidates shown per prompt"
    )
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="pairs shown, winner beside loser")
    parser.add_argument("--items", type=int, default=defaults.eval_items, help="evaluation items shown")
    parser.add_argument(
        "--thumb-px", type=int, default=defaults.thumb_px, help="larger images become thumbnails"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the samples shown")
    args = parser.parse_args(argv)
    try:
        limits = ReportLimits(
            prompts=args.prompts,
            candidates_per_prompt=args.candidates,
            pairs=args.pairs,
            eval_items=args.items,
            thumb_px=args.thumb_px,
            seed=args.seed,
        )
        page = build_report(args.run_dir, limits)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(f"[report] {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
