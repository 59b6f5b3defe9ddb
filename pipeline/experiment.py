"""The paper's experiment from the command line: BalancedDPO, Diffusion-DPO and the ablations, head to head.

    python -m pipeline.experiment --config configs/tiny_experiment.yaml    # the tiny instrument, on a CPU
    python -m pipeline.experiment --config configs/sd15.yaml               # a GPU cluster with the hub weights
    python -m pipeline.experiment --config configs/sd15.yaml --until prepare   # then train side by side:
    #   accelerate launch trainer/train.py --config <run>/experiment/configs/<method>.yaml   (one job per method)
    #   and rerun without --until: finished trainings are found, evaluation and table follow

Reruns resume: finished parts are recognised by what defines them and skipped. The work is
`pipeline.workflows.experiment.run_experiment`; docs/experiment.md explains the parts and the outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (
    None,
    "",
):  # `python pipeline/experiment.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import time

from pipeline.config import ConfigError, add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.evaluation import EvalError, ProtocolMismatch
from pipeline.workflows.experiment import run_experiment
from pipeline.workflows.methods import MethodError
from pipeline.workflows.parts import PartChanged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--until",
        choices=["prepare", "train", "evaluate"],
        default="evaluate",
        help="prepare: stage 1, votes and method configs only (train them elsewhere); train: no evaluation",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        cfg = cli_config(args)
        with console_session(cfg.output_dir, "experiment", cfg.run.verbose):
            out = run_experiment(cfg, until=args.until, progress=not args.no_progress)
            for name, path in out.configs.items():
                say(f"[experiment] {name}: config {path}, run directory {out.methods[name]}")
            if out.label_agreement:
                say(
                    f"[experiment] agreement of each method's labels with the human labels: {out.label_agreement}"
                )
            if out.table is not None:
                say(out.table[0].read_text().rstrip())
                for path in out.table:
                    say(f"[experiment] table: {path}")
            say(f"[experiment] seconds: {out.seconds}; total {time.perf_counter() - started:.1f}s")
    except (ConfigError, MethodError, PartChanged, ProtocolMismatch, EvalError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
