"""Stage 2 from the command line: every metric votes on every image pair inside a prompt; a strategy decides.

    python pipeline/vote.py --config configs/tiny.yaml [--strategy majority] [--strategy single:pickscore] ...
    python -m pipeline.vote --config configs/tiny.yaml --strategy all      # every strategy, for ablations
    python pipeline/vote.py --config X --set prompts.pairs=data.parquet --strategy human   # the dataset's labels

Writes `<run>/pairs/<strategy>/` for each strategy (the work is `pipeline.voting.run_vote`). Exit code 2 on a
bad config, candidates table or strategy, with the message on one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python pipeline/vote.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pipeline.config import ConfigError, add_config_arguments, load_config
from pipeline.io import read_manifest
from pipeline.voting import CandidatesError, StrategyError, expand_strategies, run_vote, scan_candidates
from pipeline.voting.strategies import disk_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--strategy",
        action="append",
        default=[],
        help="majority, single:<metric>, random_metric, sum, normalized_sum, weighted_majority, or all; "
        "human (relabel mode): the imported dataset's own labels (repeatable; default: vote.strategy of the config)",
    )
    parser.add_argument(
        "--candidates", type=Path, default=None, help="candidates directory (default <run>/candidates)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        names = args.strategy or [cfg.vote.strategy]
        if "all" in names:
            _, metrics = scan_candidates(args.candidates or cfg.output_dir / "candidates", cfg.vote.metrics)
            names = expand_strategies(names, metrics)
        for name in names:
            out = run_vote(cfg, name, args.candidates)
            c = read_manifest(out)["counts"]
            print(
                f"{disk_name(name)}: kept {c['pairs_kept']:,} of {c['pairs_formed']:,} pairs "
                f"(dropped {c['pairs_dropped']}) → {out}"
            )
    except (ConfigError, CandidatesError, StrategyError) as exc:
        print(f"vote: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
