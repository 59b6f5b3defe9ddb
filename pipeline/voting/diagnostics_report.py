"""The vote diagnostics rendered beside the pairs: PNG plots, `summary.md` and `diagnostics.json`.

Plots use matplotlib's `Figure` directly (no pyplot): no global backend is switched, so importing this module
inside a notebook leaves its inline plots alone. The numbers come from `pipeline.voting.diagnostics`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from pipeline.schema import SCORE_PREFIX
from pipeline.voting.diagnostics import VoteDiagnostics


def write_diagnostics(out_dir: Path, diag: VoteDiagnostics) -> dict[str, Any]:
    """Write plots, `summary.md` and `diagnostics.json` into `out_dir`; returns what the manifest records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, agree, tau = diag.metrics, diag.agreement, diag.kendall_tau_b
    strategies, overrule, margins, score_stats = (
        diag.strategies,
        diag.overruled,
        diag.margins,
        diag.score_stats,
    )
    n_prompts, total_prompts, sampled = diag.sample_prompts, diag.total_prompts, diag.sampled
    strategy = diag.strategy
    _heatmaps(out_dir / "agreement.png", metrics, agree, tau)
    _score_plot(out_dir / "scores.png", diag.sample_scores, metrics)
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
        f"a sample: {n_prompts:,} of {total_prompts:,} prompts ({diag.sample_pairs:,} pairs)"
        if sampled
        else f"all {total_prompts:,} prompts ({diag.sample_pairs:,} pairs)"
    )
    (out_dir / "diagnostics.json").write_text(json.dumps(diag.to_json(), indent=2, default=float) + "\n")

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
    return {
        "sampled": sampled,
        "sample_prompts": n_prompts,
        "sample_pairs": diag.sample_pairs,
        "dir": "diagnostics",
    }


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


def _bar_plot(path: Path, labels: list[str], series: dict[str, list[float | None]], title: str) -> None:
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
