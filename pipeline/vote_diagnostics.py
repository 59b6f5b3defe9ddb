"""Where the metrics disagree: the diagnostics written beside the pairs, as PNG plots and a markdown summary.

Plots use matplotlib's `Figure` directly (no pyplot): no global backend is switched, so importing this module
inside a notebook leaves its inline plots alone.

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

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from pipeline.config import VoteSection
from pipeline.pairing import CandidateStats, form_pairs, with_image_columns
from pipeline.schema import SCORE_PREFIX
from pipeline.strategies import VoteRule, decide, image_columns

MAX_SAMPLE_PAIRS = 250_000


def agreement_matrix(pairs: pl.DataFrame, metrics: list[str]) -> np.ndarray:
    """Share of pairs on which two metrics cast the same vote (+1, −1 or both a tie)."""
    n = len(metrics)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            same = (pairs[f"vote_{metrics[i]}"] == pairs[f"vote_{metrics[j]}"]).mean()
            out[i, j] = out[j, i] = float(same) if same is not None else math.nan
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


def _heatmaps(path: Path, metrics: list[str], agree: np.ndarray, tau: np.ndarray) -> None:
    fig = Figure(figsize=(4 + 1.6 * len(metrics), 2 + 0.8 * len(metrics)))
    axes = fig.subplots(1, 2)
    for ax, mat, title, vmin in (
        (axes[0], agree, "sign agreement", 0.0),
        (axes[1], tau, "Kendall tau-b", -1.0),
    ):
        im = ax.imshow(mat, vmin=vmin, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(metrics)), metrics, rotation=45, ha="right")
        ax.set_yticks(range(len(metrics)), metrics)
        for i in range(len(metrics)):
            for j in range(len(metrics)):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _score_plot(path: Path, scores: pl.DataFrame, metrics: list[str]) -> None:
    fig = Figure(figsize=(2.6 * len(metrics), 2.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        ax.hist(scores[SCORE_PREFIX + m].to_numpy(), bins=40, color="tab:blue")
        ax.set_title(m)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _bar_plot(path: Path, labels: list[str], series: dict[str, list[float]], title: str) -> None:
    fig = Figure(figsize=(1.2 + 0.6 * len(labels) * len(series), 3))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        ax.bar(
            np.arange(len(labels)) + k * width,
            [np.nan if v is None else v for v in values],
            width,
            label=name,
        )
    ax.set_xticks(np.arange(len(labels)) + width * (len(series) - 1) / 2, labels, rotation=45, ha="right")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def write_diagnostics(
    out_dir: Path,
    candidates: pl.LazyFrame,
    metrics: list[str],
    rule: VoteRule,
    vote: VoteSection,
    counts: pl.DataFrame,
    strategy: str,
    stats: CandidateStats,
) -> dict[str, Any]:
    """Write plots, `summary.md` and `diagnostics.json` into `out_dir`; returns what the manifest records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    total_prompts = stats.prompts
    per_prompt = stats.pairs_possible / max(total_prompts, 1)
    sample, n_prompts, sampled = _sample(candidates, vote.diagnostics_max_prompts, total_prompts, per_prompt)
    sample = sample.collect()
    carry = list(image_columns(rule))  # every strategy is compared below
    if vote.normalize_scope == "prompt":
        enriched = with_image_columns(sample.lazy(), rule, "prompt", carry)
    else:  # z over the whole table, as the vote computed it, then restricted to the sample
        enriched = with_image_columns(candidates, rule, "table", carry).join(
            sample.lazy(), on="image_id", how="semi"
        )
    pairs = form_pairs(
        enriched, metrics, vote.epsilon, vote.pairing, vote.random_k, vote.seed, carry=carry
    ).collect()
    agree, tau = agreement_matrix(pairs, metrics), kendall_tau_b(pairs, metrics)
    strategies = strategy_table(pairs, rule)
    overrule = overruled(pairs, rule)
    margins = margin_histogram(counts)
    score_stats = {
        m: sample.select(
            mean=pl.col(SCORE_PREFIX + m).mean(),
            std=pl.col(SCORE_PREFIX + m).std(),
            min=pl.col(SCORE_PREFIX + m).min(),
            max=pl.col(SCORE_PREFIX + m).max(),
        ).row(0, named=True)
        for m in metrics
    }

    _heatmaps(out_dir / "agreement.png", metrics, agree, tau)
    _score_plot(out_dir / "scores.png", sample, metrics)
    labels = [f"{f}-{a}" for f, a in margins.select("votes_for", "votes_against").iter_rows()]
    _bar_plot(
        out_dir / "margins.png", labels, {"pairs": margins["pairs"].to_list()}, "votes for – against (exact)"
    )
    _bar_plot(
        out_dir / "strategies.png",
        [r["strategy"] for r in strategies],
        {
            "kept share": [r["kept_share"] for r in strategies],
            "agrees with majority": [r["agrees_with_majority"] for r in strategies],
        },
        "strategies",
    )
    _bar_plot(
        out_dir / "overruled.png",
        metrics,
        {
            "overruled by majority": [overrule[m]["overruled"] for m in metrics],
            "tied": [overrule[m]["tied"] for m in metrics],
        },
        "how often each metric loses the vote",
    )

    scope = (
        f"a sample: {n_prompts:,} of {total_prompts:,} prompts ({len(pairs):,} pairs)"
        if sampled
        else f"all {total_prompts:,} prompts ({len(pairs):,} pairs)"
    )
    body = {
        "strategy": strategy,
        "metrics": metrics,
        "sampled": sampled,
        "sample_prompts": n_prompts,
        "sample_pairs": len(pairs),
        "total_prompts": total_prompts,
        "score_stats": score_stats,
        "agreement": agree.tolist(),
        "kendall_tau_b": tau.tolist(),
        "strategies": strategies,
        "overruled": overrule,
        "margin_histogram_exact": margins.to_dicts(),
    }
    (out_dir / "diagnostics.json").write_text(json.dumps(body, indent=2, default=float) + "\n")

    lines = [
        f"# Vote diagnostics ({strategy})",
        "",
        f"Computed on {scope}; the vote-margin table is exact over every formed pair.",
        "",
        "## Scores",
        "",
        "| metric | mean | std | min | max |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['min'])} | {_fmt(s['max'])} |"
            for m, s in score_stats.items()
        ),
        "",
        "![scores](scores.png)",
        "",
        "## Metric agreement (upper: sign agreement, lower: Kendall tau-b)",
        "",
        "| | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for i, m in enumerate(metrics):
        cells = [
            _fmt(agree[i, j]) if j > i else _fmt(tau[i, j]) if j < i else "1" for j in range(len(metrics))
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![agreement](agreement.png)",
        "",
        "## Vote margins (exact)",
        "",
        "| votes for | votes against | pairs |",
        "|---|---|---|",
        *(f"| {f} | {a} | {n:,} |" for f, a, n in margins.iter_rows()),
        "",
        "![margins](margins.png)",
        "",
        "## Strategies",
        "",
        "| strategy | kept share | agrees with majority |",
        "|---|---|---|",
        *(
            f"| {r['strategy']} | {_fmt(r['kept_share'])} | {_fmt(r['agrees_with_majority'])} |"
            for r in strategies
        ),
        "",
        "![strategies](strategies.png)",
        "",
        "## Overruled by the majority",
        "",
        "| metric | voted for the loser | tie |",
        "|---|---|---|",
        *(f"| {m} | {_fmt(o['overruled'])} | {_fmt(o['tied'])} |" for m, o in overrule.items()),
        "",
        "![overruled](overruled.png)",
        "",
    ]
    (out_dir / "summary.md").write_text("\n".join(lines))
    return {"sampled": sampled, "sample_prompts": n_prompts, "sample_pairs": len(pairs), "dir": "diagnostics"}
