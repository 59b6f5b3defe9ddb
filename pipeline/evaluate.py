"""Evaluation from the command line: models against a baseline on held-out prompts and seeds, every metric.

    python -m pipeline.evaluate --config configs/tiny.yaml                      # base vs train.strategy's weights
    python -m pipeline.evaluate --config configs/tiny.yaml --tuned runs/tiny/train/majority/final \\
        --tuned sum=runs/tiny/train/sum/final --tuned static=runs/static/train/majority/final
    python -m pipeline.evaluate --config configs/sd15.yaml --tuned balanced=runs/sd15/train/majority/final \\
        --baseline diffusion_dpo=unet:mhdang/dpo-sd1.5-text2image-v1                 # head to head

A model is `[NAME=]REF`: `base`, a trainer `final/` directory, a diffusers directory, a directory with a UNet-only
checkpoint (`unet/`), `hub:<id>[@rev]` or `unet:<id>[@rev]` (see `pipeline.evaluation.models`). The work is
`pipeline.evaluation.evaluate`; the outputs are listed in `pipeline.evaluation.compare`.
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
from pipeline.evaluation import EvalError, ProtocolMismatch, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--tuned",
        "--model",
        dest="tuned",
        action="append",
        default=None,
        metavar="[NAME=]REF",
        help="a model to evaluate (repeatable); default: train.strategy's final weights in this run",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="[NAME=]REF",
        help="the side every model is compared with (default eval.baseline: the base model)",
    )
    parser.add_argument("--out-dir", default=None, help="evaluation directory (default <run>/eval)")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="directory whose candidates/ caches the images (default the evaluation directory); "
        "evaluations sharing it reuse each other's images",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = cli_config(args)
    try:
        with console_session(cfg.output_dir, "evaluate", cfg.run.verbose):
            out = evaluate(
                cfg,
                args.tuned,
                baseline=args.baseline,
                out_dir=args.out_dir,
                cache_dir=args.cache_dir,
                progress=not args.no_progress,
            )
            say(out.markdown.read_text().rstrip())
            for what, path in out.paths().items():
                say(f"[evaluate] {what}: {path}")
            for name, reuse in out.reuse.items():
                say(
                    f"[evaluate] images of {name}: {reuse.planned} needed, {reuse.reused} reused, "
                    f"{reuse.generated} new"
                )
    except (EvalError, ProtocolMismatch, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
