"""Stage 2, the vote: candidates → pairs inside each prompt → every metric votes → a strategy picks the winner.

Owns the pairs tables (`<run>/pairs/<strategy>/`). Modules:
- `strategies`: the rules (majority, single metric, random metric, sum, normalised sum, weighted majority) as
  small polars expressions, testable on hand-made frames;
- `pairing`: checked candidates and the lazy frame of pairs inside each prompt;
- `query`: the whole vote as one lazy query, and the pairs contract's columns;
- `blocks`: the join-free vote for `pairing: all`, block by block;
- `writer`: parquet settings and the two streaming writers that count and write in one pass;
- `diagnostics` / `diagnostics_report`: where the metrics disagree, computed, then rendered as plots and Markdown;
- `dataset_pairs`: relabel mode, an imported dataset's own pairs: what `pairing: given` relabels, and the
  `human` strategy (the dataset's labels, Diffusion-DPO's baseline);
- `run`: `run_vote`, `vote_frame`, `read_pairs`, the Python API.

Relabel mode, for comparing the vote with the humans on the same candidates (one call each):
`run_vote(cfg, "majority")` relabels the dataset's pairs (`vote.pairing: auto` = `given` there),
`run_vote(cfg, "human")` keeps the dataset's labels; both write the pairs schema, and the same two images have the
same `pair_id` in both, so `read_pairs(run, "majority").join(read_pairs(run, "human"), on="pair_id")` lines them up.

The command line is `pipeline/vote.py`.
"""

from pipeline.voting.pairing import CandidatesError, scan_candidates
from pipeline.voting.run import ALL_STRATEGIES, expand_strategies, read_pairs, run_vote, vote_frame
from pipeline.voting.strategies import StrategyError, disk_name, parse_strategy

__all__ = [
    "ALL_STRATEGIES",
    "CandidatesError",
    "StrategyError",
    "disk_name",
    "expand_strategies",
    "parse_strategy",
    "read_pairs",
    "run_vote",
    "scan_candidates",
    "vote_frame",
]
