"""Win rates with several kinds of 95% interval: items resampled (what the evaluation reports), prompts resampled,
seeds resampled, and both at once.

    python benchmarks/clustered_intervals.py runs/tiny/eval/per_image.parquet [more per_image.parquet ...]

The evaluation's bootstrap (`pipeline/evaluation/winrates.py`) resamples (prompt, seed) items as if they were independent.
They are not: the seeds of one prompt share the prompt, and, in evaluations made with `eval.seed_scheme: shared`
(every evaluation before the key existed), the prompts of one seed share the starting noise (prompt p gets seed
`eval.seed_offset + k`, the same for every prompt), which the tiny model follows far more than its prompt. So three
clustered intervals are printed beside the item one:

- prompts resampled with replacement, each prompt's seeds kept together (the interval the evaluation will report);
- seeds resampled, each seed's prompts kept together (with 4 or 8 seeds, a coarse interval);
- both: prompts and seeds resampled independently, the items of the drawn prompt × seed grid averaged (a two-way
  "pigeonhole" bootstrap), the widest of the four and the one that counts both sources of dependence.

Each for the majority, the average and every metric, from `per_image.parquet` alone (columns `run`, `prompt_id`,
`seed`, `win_<metric>`, `win_majority`). Per-seed majority win rates are printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluation.winrates import AVERAGE, MAJORITY, bootstrap_indices, percentile_ci  # noqa: E402

SAMPLES = 10_000
CONFIDENCE = 0.95


def clustered_ci(
    values: np.ndarray,
    clusters: np.ndarray,
    samples: int = SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` when whole clusters (prompts) are resampled with replacement.

    A resample's statistic is the mean over every item of the drawn clusters (a cluster drawn twice counts twice),
    so with equal cluster sizes it is the mean of the drawn clusters' means.
    """
    values = np.asarray(values, dtype=np.float64)
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(ids))
    sizes = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(samples, len(ids)))
    means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def two_way_ci(
    values: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    samples: int = SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean when row clusters (prompts) and column clusters (seeds) are both resampled.

    Needs a complete grid (every prompt with every seed), which the evaluation produces.
    """
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    if len(values) != len(r_ids) * len(c_ids):
        raise ValueError(
            f"not a complete prompt × seed grid: {len(values)} items, {len(r_ids)} × {len(c_ids)}"
        )
    grid = np.full((len(r_ids), len(c_ids)), np.nan)
    grid[r, c] = values
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for i in range(samples):
        pick_r = rng.integers(0, len(r_ids), len(r_ids))
        pick_c = rng.integers(0, len(c_ids), len(c_ids))
        means[i] = grid[np.ix_(pick_r, pick_c)].mean()
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def intervals(per_image: pl.DataFrame, samples: int = SAMPLES, seed: int = 0) -> pl.DataFrame:
    """One row per run × statistic: win rate, and its item, prompt, seed and prompt × seed intervals."""
    metrics = [c[len("win_") :] for c in per_image.columns if c.startswith("win_") and c != "win_majority"]
    rows = []
    for run in per_image["run"].unique(maintain_order=True).to_list():
        part = per_image.filter(pl.col("run") == run)
        wins = {m: part[f"win_{m}"].to_numpy() for m in metrics}
        wins[AVERAGE] = np.mean([wins[m] for m in metrics], axis=0)
        wins[MAJORITY] = part["win_majority"].to_numpy()
        prompts, seeds = part["prompt_id"].to_numpy(), part["seed"].to_numpy()
        indices = bootstrap_indices(len(part), samples, seed)
        for name, values in wins.items():
            cis = {
                "item": percentile_ci(values, indices, CONFIDENCE),
                "prompt": clustered_ci(values, prompts, samples, CONFIDENCE, seed),
                "seed": clustered_ci(values, seeds, samples, CONFIDENCE, seed),
                "two_way": two_way_ci(values, prompts, seeds, samples, CONFIDENCE, seed),
            }
            row = {"run": run, "metric": name, "win_rate": float(values.mean())}
            for kind, (low, high) in cis.items():
                row[f"{kind}_ci_low"], row[f"{kind}_ci_high"] = low, high
            row |= {
                "n_items": len(part),
                "n_prompts": len(np.unique(prompts)),
                "n_seeds": len(np.unique(seeds)),
            }
            rows.append(row)
    return pl.DataFrame(rows)


def per_seed(per_image: pl.DataFrame) -> pl.DataFrame:
    """Majority win rate of each run on each evaluation seed (over all prompts)."""
    return (
        per_image.group_by("run", "seed", maintain_order=True)
        .agg(pl.col("win_majority").mean())
        .sort("seed")
        .pivot(on="seed", index="run", values="win_majority")
    )


def markdown(table: pl.DataFrame) -> str:
    lines = [
        "| run | metric | win rate | items resampled | prompts resampled | seeds resampled | prompts × seeds "
        "| items / prompts / seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dicts():
        cis = " | ".join(
            f"[{r[f'{k}_ci_low']:.3f}, {r[f'{k}_ci_high']:.3f}]"
            for k in ("item", "prompt", "seed", "two_way")
        )
        lines.append(
            f"| {r['run']} | {r['metric']} | {r['win_rate']:.3f} | {cis} "
            f"| {r['n_items']} / {r['n_prompts']} / {r['n_seeds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("per_image", nargs="+", help="per_image.parquet files written by the evaluation")
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the majority rows as JSON")
    args = parser.parse_args(argv)
    for path in args.per_image:
        table = intervals(pl.read_parquet(path), args.samples, args.seed)
        print(f"## {path}\n")
        print(markdown(table))
        print("\nmajority win rate per evaluation seed:\n")
        with pl.Config(tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
            print(per_seed(pl.read_parquet(path)))
        print()
        if args.json:
            majority = table.filter(pl.col("metric") == MAJORITY).to_dicts()
            print(
                json.dumps({r["run"]: {k: v for k, v in r.items() if k != "run"} for r in majority}, indent=2)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
