"""Stage 1 entry point: `python pipeline/score.py --config configs/tiny.yaml [--set key=value ...]`.

Runs locally (starts a local Ray), on a cluster through `ray job submit --working-dir . -- python pipeline/score.py
--config ...` (connects to the job's Ray), or as `bdpo-score`. The work itself is `pipeline.stage1.run_stage1`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the project root importable (ray job submit uploads it as the working dir).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import add_config_arguments, load_config
from pipeline.stage1 import run_stage1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--round", type=int, default=0, help="online round written to the `round` column")
    parser.add_argument("--model", default=None, help="generate with this model instead of model.pretrained")
    parser.add_argument("--out-dir", default=None, help="run directory (default: run.output_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = run_stage1(
        cfg, model_ref=args.model, round=args.round, out_dir=args.out_dir, progress=not args.no_progress
    )
    print(
        f"[stage 1] {out.n_written} new rows; {out.n_rows} candidates in {out.candidates_dir}, "
        f"{out.n_errors} quarantined in {out.errors_dir}; manifest {out.manifest}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
