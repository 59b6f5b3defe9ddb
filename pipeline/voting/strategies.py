"""How each strategy turns per-metric votes into a winner: small polars expressions, one function per strategy.

Every function here works on the oriented pair frame built by `pipeline.voting.pairing` (one row per unordered pair,
image a before image b by id) whose columns are `vote_<m>` (Int8, +1 when metric m prefers a, −1 when it
prefers b, 0 when the scores differ by at most the metric's epsilon), `votes_a`, `votes_b` (how many metrics
prefer each side), `a_<m>` / `b_<m>` (raw scores), and, where a strategy needs them, per-image values carried
through the join as `a__<name>` / `b__<name>` (`image_columns`: score sum, z-score sum, seeded id hash). A strategy returns a `Decision`: `a_wins` (bool) and `reason` (null when the pair is kept, else a
UInt8 code of why it is dropped; `reason_name` turns it into one of `REASONS`). Nothing here touches files, so
the rules can be tested on hand-made frames.

Strategy names as written on disk: `majority`, `single_<metric>`, `random_metric`, `sum`, `normalized_sum`,
`weighted_majority`. Configs and the CLI may also write `single:<metric>`. `human` (relabel mode) is no rule over
metrics: it keeps an imported dataset's own labels (`pipeline.voting.dataset_pairs`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from pipeline.schema import SCORE_PREFIX

_STRATEGY = re.compile(
    r"^(majority|random_metric|sum|normalized_sum|weighted_majority|human|single[:_]([a-z][a-z0-9_]*))$"
)

# Why a pair is dropped; the manifest counts each (kept pairs have no reason).
REASONS = (
    "no_majority_all_tied",  # every metric within its epsilon
    "no_majority_split",  # as many metrics for a as for b
    "no_majority_below_min_agree",  # the larger side has fewer than min_agree metrics
    "no_weighted_majority",  # the larger side holds at most half of the total weight
    "tie",  # the deciding metric or score sum is equal for both images
)


def _code(reason: str) -> pl.Expr:
    """Reasons travel through the query as small integers (1-based index into REASONS): cheaper than strings."""
    return pl.lit(REASONS.index(reason) + 1, pl.UInt8)


_KEPT = pl.lit(None, pl.UInt8)


def reason_name(code: int) -> str:
    return REASONS[code - 1]


class StrategyError(ValueError):
    """A strategy name or parameter that cannot be used with this table's metrics."""


@dataclass(frozen=True)
class Decision:
    a_wins: pl.Expr
    reason: pl.Expr


@dataclass(frozen=True)
class VoteRule:
    """Everything a strategy needs besides the pair frame; built once from the config and the table's metrics."""

    metrics: list[str]
    min_agree: int
    weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0


def parse_strategy(name: str) -> tuple[str, str | None]:
    """`single:pick` → ("single", "pick"); `majority` → ("majority", None). Unknown names are errors."""
    match = _STRATEGY.match(name)
    if not match:
        raise StrategyError(
            f"unknown strategy {name!r}; expected one of majority, single:<metric>, random_metric, sum, "
            "normalized_sum, weighted_majority, human"
        )
    if match.group(2):
        return "single", match.group(2)
    return name, None


def disk_name(name: str) -> str:
    """The directory name of a strategy: `single:pick` → `single_pick`."""
    kind, metric = parse_strategy(name)
    return f"single_{metric}" if kind == "single" else kind


def check_strategy(name: str, metrics: list[str]) -> tuple[str, str | None]:
    kind, metric = parse_strategy(name)
    if kind == "human":
        raise StrategyError(
            "strategy 'human' takes an imported dataset's own labels, not a vote over metrics: "
            "run it with run_vote / pipeline/vote.py on a relabel-mode run"
        )
    if metric is not None and metric not in metrics:
        raise StrategyError(f"strategy {name!r} names metric {metric!r}, but the table has only {metrics}")
    return kind, metric


def default_min_agree(n_metrics: int) -> int:
    """A strict majority: 3 of 5, 3 of 4, 2 of 3, 1 of 1."""
    return n_metrics // 2 + 1


def metric_votes(metrics: list[str], epsilon: dict[str, float]) -> list[pl.Expr]:
    """`vote_<m>` from the raw scores: +1 when a − b > ε_m, −1 when b − a > ε_m, else 0."""
    out = []
    for m in metrics:
        diff = pl.col(f"a_{m}") - pl.col(f"b_{m}")
        eps = epsilon.get(m, 0.0)
        out.append(((diff > eps).cast(pl.Int8) - (diff < -eps).cast(pl.Int8)).alias(f"vote_{m}"))
    return out


def vote_counts(metrics: list[str]) -> list[pl.Expr]:
    """`votes_a`, `votes_b`: how many metrics prefer each side (Int16, as in the pairs schema)."""
    votes = [pl.col(f"vote_{m}") for m in metrics]
    return [
        pl.sum_horizontal([(v == 1).cast(pl.Int16) for v in votes]).cast(pl.Int16).alias("votes_a"),
        pl.sum_horizontal([(v == -1).cast(pl.Int16) for v in votes]).cast(pl.Int16).alias("votes_b"),
    ]


def majority(rule: VoteRule) -> Decision:
    """BalancedDPO: the side more metrics prefer wins if at least `min_agree` metrics prefer it."""
    va, vb = pl.col("votes_a"), pl.col("votes_b")
    reason = (
        pl.when((va == 0) & (vb == 0))
        .then(_code("no_majority_all_tied"))
        .when(va == vb)
        .then(_code("no_majority_split"))
        .when(pl.max_horizontal(va, vb) < rule.min_agree)
        .then(_code("no_majority_below_min_agree"))
        .otherwise(_KEPT)
    )
    return Decision(a_wins=va > vb, reason=reason)


def weighted_majority(rule: VoteRule) -> Decision:
    """Each metric votes with its weight (default 1); the winner must hold more than half of the total weight.

    With equal weights the weights are vote counts, compared in integers (exact, and cheaper at 45M pairs).
    """
    weights = [rule.weights.get(m, 1.0) for m in rule.metrics]
    if len(set(weights)) == 1:
        wa, wb = pl.col("votes_a"), pl.col("votes_b")
        no_majority = 2 * pl.max_horizontal(wa, wb) <= len(weights)
    else:
        total = sum(weights)
        wa, wb = (
            pl.sum_horizontal(
                [
                    pl.when(pl.col(f"vote_{m}") == side).then(w).otherwise(0.0)
                    for m, w in zip(rule.metrics, weights, strict=True)
                ]
            )
            for side in (1, -1)
        )
        no_majority = pl.max_horizontal(wa, wb) <= total / 2
    reason = (
        pl.when((pl.col("votes_a") == 0) & (pl.col("votes_b") == 0))
        .then(_code("no_majority_all_tied"))
        .when(wa == wb)
        .then(_code("no_majority_split"))
        .when(no_majority)
        .then(_code("no_weighted_majority"))
        .otherwise(_KEPT)
    )
    return Decision(a_wins=wa > wb, reason=reason)


def _decided_by(vote: pl.Expr) -> Decision:
    return Decision(a_wins=vote > 0, reason=pl.when(vote == 0).then(_code("tie")).otherwise(_KEPT))


def single(metric: str) -> Decision:
    """One metric decides (the paper's single-metric baselines); within its epsilon the pair is a tie."""
    return _decided_by(pl.col(f"vote_{metric}"))


def pair_key(seed: int) -> pl.Expr:
    """A seeded pseudo-random UInt64 per pair, from the two image ids (order a, b is fixed by id).

    Uses polars' hash: reproducible for a given seed and polars version (the manifest records the version).
    """
    return pl.struct("image_id_a", "image_id_b").hash(seed)


def image_columns(rule: VoteRule) -> dict[str, pl.Expr]:
    """Per-image values some strategies compare, computed once per image before the pairs join.

    Once per pair they cost more than the vote itself at 45M pairs (a string hash per pair, ten score columns
    through the join); a difference of per-image sums equals the sum of per-metric differences. `_zsum` needs
    the `z_<m>` columns of `pipeline.voting.pairing.add_z_scores`.
    """
    return {
        "_sum": pl.sum_horizontal([pl.col(SCORE_PREFIX + m).cast(pl.Float64) for m in rule.metrics]),
        "_zsum": pl.sum_horizontal([pl.col(f"z_{m}") for m in rule.metrics]),
        "_hash": pl.col("image_id").hash(rule.seed),
    }


def image_columns_needed(name: str) -> list[str]:
    """Which of `image_columns` a strategy reads (the diagnostics, comparing every strategy, need all)."""
    return {"sum": ["_sum"], "normalized_sum": ["_zsum"], "random_metric": ["_hash"]}.get(
        parse_strategy(name)[0], []
    )


def random_metric(rule: VoteRule) -> Decision:
    """A seeded random metric decides each pair: the 'no balancing' ablation with every metric in the mix.

    The pair's draw mixes the two images' seeded id hashes (xor of independent uniform hashes is uniform).
    """
    chosen = pl.col("a__hash").xor(pl.col("b__hash")) % len(rule.metrics)
    vote = pl.lit(0, pl.Int8)
    for i, m in enumerate(rule.metrics):
        vote = pl.when(chosen == i).then(pl.col(f"vote_{m}")).otherwise(vote)
    return _decided_by(vote)


def _difference(column: str) -> Decision:
    diff = pl.col(f"a_{column}") - pl.col(f"b_{column}")
    return Decision(a_wins=diff > 0, reason=pl.when(diff == 0).then(_code("tie")).otherwise(_KEPT))


def score_sum(rule: VoteRule) -> Decision:
    """Raw score sum: the metric with the largest scale dominates, which is what the vote avoids."""
    return _difference("_sum")


# z-scores are O(1); sums that differ by less than this are rounding (the statistics' summation order), not a
# preference, so they are ties. Without it, two ways of computing the same z-scores could keep different pairs.
Z_SUM_TIE = 1e-9


def normalized_sum(rule: VoteRule) -> Decision:
    """Sum of z-scores (per prompt or over the table, see `pipeline.voting.pairing.add_z_scores`)."""
    diff = pl.col("a__zsum") - pl.col("b__zsum")
    tie = diff.abs() <= Z_SUM_TIE
    return Decision(a_wins=diff > 0, reason=pl.when(tie).then(_code("tie")).otherwise(_KEPT))


def decide(name: str, rule: VoteRule) -> Decision:
    """The decision expressions of one strategy."""
    kind, metric = check_strategy(name, rule.metrics)
    if kind == "single":
        assert metric is not None
        return single(metric)
    return {
        "majority": majority,
        "weighted_majority": weighted_majority,
        "random_metric": random_metric,
        "sum": score_sum,
        "normalized_sum": normalized_sum,
    }[kind](rule)
