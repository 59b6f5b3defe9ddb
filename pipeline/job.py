"""The whole job from the command line: stage 1 → vote → train → evaluate, for `run.rounds` online rounds.

    python -m pipeline.job --config configs/tiny.yaml [--set run.rounds=3]

The work is `pipeline.workflows.job.run_job`; at the end the run's report is written (`pipeline.reporting`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python pipeline/job.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.config import add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.reporting import build_report
from pipeline.workflows.job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = cli_config(args)
    with console_session(cfg.output_dir, "job", cfg.run.verbose):
        out = run_job(cfg, progress=not args.no_progress)
        for what, path in out.paths().items():
            say(f"[job] {what}: {path}")
        if out.eval is not None:
            say(out.eval.markdown.read_text().rstrip())
        say(f"[job] report: {build_report(cfg.output_dir).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
