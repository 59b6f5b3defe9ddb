"""The ablation from the command line: several training variants on one set of candidates, side by side.

    python -m pipeline.ablation --config configs/tiny.yaml \\
        --variant majority --variant static=majority:train.ref_update.mode=none \\
        --variant sum=sum --variant single_pickscore=single:pickscore --variant shuffled=majority:shuffle

A variant is `NAME=STRATEGY[:KEY=VALUE|:shuffle]...` (see `pipeline.workflows.ablation`, which does the work).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (
    None,
    "",
):  # `python pipeline/ablation.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.config import add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.workflows.ablation import parse_variant, run_ablation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=STRATEGY[:OPTION]...")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = cli_config(args)
    with console_session(cfg.output_dir, "ablation", cfg.run.verbose):
        out = run_ablation(cfg, [parse_variant(v) for v in args.variant], progress=not args.no_progress)
        say(out.eval.markdown.read_text().rstrip())
        for what, path in out.eval.paths().items():
            say(f"[ablation] {what}: {path}")
        say(f"[ablation] seconds: { {k: round(v, 1) for k, v in out.seconds.items()} }")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
