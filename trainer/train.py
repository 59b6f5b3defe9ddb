"""Entry point: `python trainer/train.py --config FILE` or `accelerate launch trainer/train.py --config FILE`.

Trains on `<run>/pairs/<strategy>/` joined to `<run>/candidates/` and writes `<run>/train/<strategy>/`; needs no
other stage, so it can be rerun alone on cached pairs. From Python: `from trainer.train import train`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ConfigError, add_config_arguments, cli_config
from pipeline.console import console_session
from trainer.checkpoints import CheckpointError
from trainer.data import TrainDataError
from trainer.fingerprint import FingerprintMismatchError
from trainer.recipe import NonFiniteLossError, TrainOutputs, train

# Input the run cannot use: exit code 2 with the message, no traceback.
INPUT_ERRORS = (ConfigError, TrainDataError, FingerprintMismatchError, CheckpointError)

__all__ = ["TrainOutputs", "main", "train"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser)
    parser.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        help="checkpoint and exit after this optimizer step (a later run resumes from there)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = cli_config(args)
        with console_session(cfg.output_dir, "train", cfg.run.verbose):
            train(cfg, stop_at_step=args.stop_at_step)  # says how far it got and where the weights are
    except INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
