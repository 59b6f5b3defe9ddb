"""The vote as one lazy polars query: candidates → pairs inside each prompt → per-metric votes → a decision.

`build_vote` returns every formed pair with its votes, `_a_wins` and `_reason` (null when kept), ready to be
streamed once (`pipeline.voting.writer`); `oriented_columns` turns a decided pair frame into the pairs contract
(winner and loser named, votes seen from the winner). Pairs are formed by `pipeline.voting.pairing`; the rule that
decides them is `pipeline.voting.strategies`.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from pipeline.config import VoteSection
from pipeline.schema import pairs_schema
from pipeline.voting.pairing import form_pairs, pair_id_expr, with_image_columns
from pipeline.voting.strategies import Decision, VoteRule, decide, image_columns_needed


def pairing_of(vote: VoteSection) -> Literal["all", "given", "best_vs_worst", "random_k"]:
    """The pairing to form; `auto` must have been resolved by the caller (`pipeline.voting.run.resolve_pairing`)."""
    if vote.pairing == "auto":
        raise ValueError("vote.pairing 'auto' must be resolved before forming pairs")
    return vote.pairing


def oriented_columns(strategy: str, metrics: list[str]) -> dict[str, pl.Expr]:
    """The pairs schema's columns from a decided pair frame: winner and loser named, votes seen from the winner."""
    a_wins = pl.col("_a_wins")
    n = len(metrics)
    columns: dict[str, pl.Expr] = {
        "pair_id": pair_id_expr(),
        "prompt_id": pl.col("prompt_id"),
        "prompt": pl.col("prompt"),
        "image_id_w": pl.when(a_wins).then("image_id_a").otherwise("image_id_b"),
        "image_id_l": pl.when(a_wins).then("image_id_b").otherwise("image_id_a"),
        "strategy": pl.lit(strategy),
        **{
            f"vote_{m}": pl.when(a_wins)
            .then(pl.col(f"vote_{m}"))
            .otherwise(-pl.col(f"vote_{m}"))
            .cast(pl.Int8)
            for m in metrics
        },
        "votes_w": pl.when(a_wins).then("votes_a").otherwise("votes_b").cast(pl.Int16),
        "votes_l": pl.when(a_wins).then("votes_b").otherwise("votes_a").cast(pl.Int16),
        "n_metrics": pl.lit(n, pl.Int16),
        # Share of all metrics that prefer the winner: one meaning for every strategy.
        "confidence": (pl.when(a_wins).then("votes_a").otherwise("votes_b") / n).cast(pl.Float32),
    }
    assert list(columns) == pairs_schema(metrics).names
    return columns


def oriented_pairs(decided: pl.LazyFrame, strategy: str, metrics: list[str]) -> pl.LazyFrame:
    """Kept pairs in the pairs schema."""
    return decided.filter(pl.col("_reason").is_null()).select(**oriented_columns(strategy, metrics))


def decided_pairs(pairs: pl.LazyFrame, decision: Decision) -> pl.LazyFrame:
    return pairs.with_columns(_a_wins=decision.a_wins, _reason=decision.reason)


def build_vote(
    candidates: pl.LazyFrame,
    metrics: list[str],
    rule: VoteRule,
    vote: VoteSection,
    strategy: str,
    given: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """The whole vote as one lazy query: every formed pair with its votes, `_a_wins` and `_reason` (null = kept).

    `vote.pairing` is resolved (not `auto`); `given` holds the dataset's pairs for `pairing: given`.
    """
    carry = image_columns_needed(strategy)
    candidates = with_image_columns(candidates, rule, vote.normalize_scope, carry)
    pairs = form_pairs(
        candidates,
        metrics,
        vote.epsilon,
        pairing_of(vote),
        vote.random_k,
        vote.seed,
        carry=carry,
        given=given,
    )
    decided = decided_pairs(pairs, decide(strategy, rule))
    return decided.select(
        "prompt_id",
        "prompt",
        "image_id_a",
        "image_id_b",
        *(f"vote_{m}" for m in metrics),
        "votes_a",
        "votes_b",
        "_a_wins",
        "_reason",
    )


def count_pairs(decided: pl.DataFrame) -> pl.DataFrame:
    """Pairs per (drop reason, votes_a, votes_b): the manifest's counts and the exact vote-margin histogram."""
    return decided.group_by("_reason", "votes_a", "votes_b").agg(n=pl.len())
