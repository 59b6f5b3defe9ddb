"""Evaluation from the command line: base vs tuned models on held-out prompts and seeds, every metric.

    python -m pipeline.evaluate --config configs/tiny.yaml                      # base vs train.strategy's weights
    python -m pipeline.evaluate --config configs/tiny.yaml --tuned runs/tiny/train/majority/final \\
        --tuned sum=runs/tiny/train/sum/final --tuned static=runs/static/train/majority/final

The work is `pipeline.evaluation.evaluate`; the outputs are listed in `pipeline.evaluation.compare`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (
    None,
    "",
):  # `python pipeline/evaluate.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.config import add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.evaluation import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--tuned",
        action="append",
        default=None,
        metavar="[NAME=]DIR",
        help="a trainer final/ directory or a diffusers directory (repeatable); default: train.strategy's",
    )
    parser.add_argument("--out-dir", default=None, help="evaluation directory (default <run>/eval)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = cli_config(args)
    with console_session(cfg.output_dir, "evaluate", cfg.run.verbose):
        out = evaluate(cfg, args.tuned, out_dir=args.out_dir, progress=not args.no_progress)
        say(out.markdown.read_text().rstrip())
        for what, path in out.paths().items():
            say(f"[evaluate] {what}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
