"""Where the metrics disagree, computed: the numbers behind the diagnostics written beside the pairs.

`compute_diagnostics` returns a `VoteDiagnostics`; `pipeline.voting.diagnostics_report` renders it (plots,
`summary.md`, `diagnostics.json`). What is computed:

- per-metric score distributions (each metric on its own scale);
- the pairwise metric agreement matrix: share of pairs where two metrics cast the same vote, and Kendall's tau-b
  pooled over within-prompt pairs (scores are only compared inside a prompt, never across prompts);
- the vote-margin histogram (votes for the winning side against votes for the other);
- the share of pairs each strategy keeps, and how often it agrees with the majority's winner;
- how often each metric is overruled by the majority (it voted for the loser of a kept majority pair).

The vote-margin histogram is exact (it comes from the same pass as the manifest's counts). Everything else is
computed on at most `vote.diagnostics_max_prompts` prompts (and about 250k pairs); `summary.md` and
`diagnostics.json` say whether and how much was sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import VoteSection
from pipeline.schema import SCORE_PREFIX
from pipeline.voting.pairing import CandidateStats, form_pairs, with_image_columns
from pipeline.voting.query import pairing_of
from pipeline.voting.strategies import VoteRule, decide, image_columns

MAX_SAMPLE_PAIRS = 250_000


def agreement_matrix(pairs: pl.DataFrame, metrics: list[str]) -> np.ndarray:
    """Share of pairs on which two metrics cast the same vote (+1, −1 or both a tie)."""
    n = len(metrics)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            same = pairs[f"vote_{metrics[i]}"].to_numpy() == pairs[f"vote_{metrics[j]}"].to_numpy()
            out[i, j] = out[j, i] = float(same.mean()) if len(same) else math.nan
    return out


def kendall_tau_b(pairs: pl.DataFrame, metrics: list[str]) -> np.ndarray:
    """Kendall's tau-b between metrics over the given pairs: (C − D) / √((N − T₁)(N − T₂)), ties per metric."""
    n = len(metrics)
    out = np.eye(n)
    votes = {m: pairs[f"vote_{m}"].cast(pl.Int64).to_numpy() for m in metrics}
    total = len(pairs)
    for i in range(n):
        for j in range(i + 1, n):
            vi, vj = votes[metrics[i]], votes[metrics[j]]
            product = vi * vj
            c, d = int((product > 0).sum()), int((product < 0).sum())
            ti, tj = int((vi == 0).sum()), int((vj == 0).sum())
            denom = math.sqrt((total - ti) * (total - tj))
            out[i, j] = out[j, i] = (c - d) / denom if denom else math.nan
    return out


def strategy_table(pairs: pl.DataFrame, rule: VoteRule) -> list[dict[str, Any]]:
    """For every strategy: share of pairs kept, and agreement with the majority winner on pairs both keep."""
    names = ["majority", "weighted_majority", "sum", "normalized_sum", "random_metric"]
    names += [f"single_{m}" for m in rule.metrics]
    majority = decide("majority", rule)
    frame = pairs.with_columns(_maj_wins=majority.a_wins, _maj_kept=majority.reason.is_null())
    rows = []
    for name in names:
        d = decide(name, rule)
        r = frame.select(
            kept=d.reason.is_null().mean(),
            agree=(d.a_wins == pl.col("_maj_wins")).filter(d.reason.is_null() & pl.col("_maj_kept")).mean(),
        ).row(0, named=True)
        rows.append({"strategy": name, "kept_share": r["kept"], "agrees_with_majority": r["agree"]})
    return rows


def overruled(pairs: pl.DataFrame, rule: VoteRule) -> dict[str, dict[str, float | None]]:
    """Per metric, over the pairs majority keeps: share where it voted for the loser, and share it called a tie."""
    d = decide("majority", rule)
    kept = pairs.filter(d.reason.is_null()).with_columns(_a_wins=d.a_wins)
    out = {}
    for m in rule.metrics:
        v = pl.col(f"vote_{m}")
        against = (pl.col("_a_wins") & (v == -1)) | (~pl.col("_a_wins") & (v == 1))
        r = kept.select(against=against.mean(), tied=(v == 0).mean()).row(0, named=True)
        out[m] = {"overruled": r["against"], "tied": r["tied"]}
    return out


def margin_histogram(counts: pl.DataFrame) -> pl.DataFrame:
    """Exact pairs per (votes for the larger side, votes for the smaller side), from the vote's counts."""
    return (
        counts.with_columns(
            votes_for=pl.max_horizontal("votes_a", "votes_b"),
            votes_against=pl.min_horizontal("votes_a", "votes_b"),
        )
        .group_by("votes_for", "votes_against")
        .agg(pairs=pl.col("n").sum())
        .sort("votes_for", "votes_against", descending=[True, False])
    )


def _sample(
    candidates: pl.LazyFrame, max_prompts: int, total_prompts: int, pairs_per_prompt: float
) -> tuple[pl.LazyFrame, int, bool]:
    budget = max(1, int(MAX_SAMPLE_PAIRS // max(pairs_per_prompt, 1.0)))
    n = min(max_prompts, budget)
    if n >= total_prompts:
        return candidates, total_prompts, False
    chosen = candidates.select("prompt_id").unique().sort("prompt_id").head(n)
    return candidates.join(chosen, on="prompt_id", how="semi"), n, True


@dataclass
class VoteDiagnostics:
    """Every number of the diagnostics; `sample_scores` (the sampled candidates' scores) feeds the histograms."""

    strategy: str
    metrics: list[str]
    sampled: bool
    sample_prompts: int
    sample_pairs: int
    total_prompts: int
    score_stats: dict[str, dict[str, float | None]]
    agreement: np.ndarray
    kendall_tau_b: np.ndarray
    strategies: list[dict[str, Any]]
    overruled: dict[str, dict[str, float | None]]
    margins: pl.DataFrame
    sample_scores: pl.DataFrame = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "metrics": self.metrics,
            "sampled": self.sampled,
            "sample_prompts": self.sample_prompts,
            "sample_pairs": self.sample_pairs,
            "total_prompts": self.total_prompts,
            "score_stats": self.score_stats,
            "agreement": self.agreement.tolist(),
            "kendall_tau_b": self.kendall_tau_b.tolist(),
            "strategies": self.strategies,
            "overruled": self.overruled,
            "margin_histogram_exact": self.margins.to_dicts(),
        }


def compute_diagnostics(
    candidates: pl.LazyFrame,
    metrics: list[str],
    rule: VoteRule,
    vote: VoteSection,
    counts: pl.DataFrame,
    strategy: str,
    stats: CandidateStats,
    given: pl.LazyFrame | None = None,
) -> VoteDiagnostics:
    """Agreement, strategies and overruled metrics on a sample of prompts; the margin histogram exactly.

    `given`: the dataset's pairs when `vote.pairing` is `given` (relabel mode)."""
    total_prompts = stats.prompts
    per_prompt = stats.pairs_possible / max(total_prompts, 1)
    sample_lazy, n_prompts, sampled = _sample(
        candidates, vote.diagnostics_max_prompts, total_prompts, per_prompt
    )
    sample = sample_lazy.collect()
    carry = list(image_columns(rule))  # every strategy is compared below
    if vote.normalize_scope == "prompt":
        enriched = with_image_columns(sample.lazy(), rule, "prompt", carry)
    else:  # z over the whole table, as the vote computed it, then restricted to the sample
        enriched = with_image_columns(candidates, rule, "table", carry).join(
            sample.lazy(), on="image_id", how="semi"
        )
    pairs = form_pairs(
        enriched, metrics, vote.epsilon, pairing_of(vote), vote.random_k, vote.seed, carry=carry, given=given
    ).collect()
    score_stats = {
        m: sample.select(
            mean=pl.col(SCORE_PREFIX + m).mean(),
            std=pl.col(SCORE_PREFIX + m).std(),
            min=pl.col(SCORE_PREFIX + m).min(),
            max=pl.col(SCORE_PREFIX + m).max(),
        ).row(0, named=True)
        for m in metrics
    }
    return VoteDiagnostics(
        strategy=strategy,
        metrics=metrics,
        sampled=sampled,
        sample_prompts=n_prompts,
        sample_pairs=len(pairs),
        total_prompts=total_prompts,
        score_stats=score_stats,
        agreement=agreement_matrix(pairs, metrics),
        kendall_tau_b=kendall_tau_b(pairs, metrics),
        strategies=strategy_table(pairs, rule),
        overruled=overruled(pairs, rule),
        margins=margin_histogram(counts),
        sample_scores=sample.select([SCORE_PREFIX + m for m in metrics]),
    )
