"""The whole job from the command line: stage 1 → vote → train → evaluate, for `run.rounds` online rounds.

    python -m pipeline.job --config configs/tiny.yaml [--set run.rounds=3]

The work is `pipeline.workflows.job.run_job`; at the end the run's report is written (`pipeline.reporting`).
Exit code 2, with the message and no traceback, for input a stage
refuses (the config, prompt or candidates files, scorers and models that do not exist, image settings or a
training fingerprint that differ from what the run directory holds, a damaged checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python pipeline/job.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.config import ConfigError, add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.data.pickapic import PickapicError
from pipeline.data.prompts import PromptSourceError
from pipeline.reporting import build_report
from pipeline.stage1 import InputError, SettingsMismatchError
from pipeline.voting import CandidatesError, StrategyError
from pipeline.workflows.job import run_job


def input_errors() -> tuple[type[Exception], ...]:
    """What any stage of the job raises for input it refuses (the trainer's are imported only when asked)."""
    from trainer.train import INPUT_ERRORS as TRAINER_ERRORS

    stages = (
        PromptSourceError,
        PickapicError,
        InputError,
        SettingsMismatchError,
        CandidatesError,
        StrategyError,
    )
    return (ConfigError, *stages, *TRAINER_ERRORS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = cli_config(args)
        with console_session(cfg.output_dir, "job", cfg.run.verbose):
            out = run_job(cfg, progress=not args.no_progress)
            for what, path in out.paths().items():
                say(f"[job] {what}: {path}")
            if out.eval is not None:
                say(out.eval.markdown.read_text().rstrip())
            say(f"[job] report: {build_report(cfg.output_dir).resolve()}")
    except input_errors() as exc:
        print(f"job: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
