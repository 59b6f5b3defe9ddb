"""Stage 1 entry point: `python pipeline/score.py --config configs/tiny.yaml [--set key=value ...]`.

Runs locally (starts a local Ray), on a cluster through `ray job submit --working-dir . -- python pipeline/score.py
--config ...` (connects to the job's Ray), or as `bdpo-score`. The work itself is `pipeline.stage1.run_stage1`.

Exit code 2, with the message and no traceback, for input found wrong before any image is made (the config, a
prompt or pair file, a scorer or model that does not exist, settings that differ from the table's, more GPUs than
a local Ray has); 1 for a stage-1 failure during the run (a scorer that raises under `on_error: fail`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the project root importable (ray job submit uploads it as the working dir).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import ConfigError, add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.data.pickapic import PickapicError
from pipeline.data.prompts import PromptSourceError
from pipeline.stage1 import Stage1Error, run_stage1
from pipeline.stage1.identity import SettingsMismatchError
from pipeline.stage1.plan import InputError

INPUT_ERRORS = (ConfigError, PromptSourceError, PickapicError, InputError, SettingsMismatchError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--round", type=int, default=0, help="online round written to the `round` column")
    parser.add_argument("--model", default=None, help="generate with this model instead of model.pretrained")
    parser.add_argument("--out-dir", default=None, help="run directory (default: run.output_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line or bar")
    args = parser.parse_args(argv)
    try:
        cfg = cli_config(args)
        with console_session(args.out_dir or cfg.output_dir, "score", cfg.run.verbose):
            out = run_stage1(
                cfg,
                model_ref=args.model,
                round=args.round,
                out_dir=args.out_dir,
                progress=not args.no_progress,
            )
            say(f"[score] {out.n_rows} candidates, {out.n_errors} quarantined; manifest {out.manifest}")
    except INPUT_ERRORS as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 2
    except Stage1Error as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
