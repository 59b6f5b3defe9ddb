"""Stage 2: every metric votes on every image pair inside a prompt; a strategy picks the winner.

    python pipeline/vote.py --config configs/tiny.yaml [--strategy majority] [--strategy single:pick] ...
    python -m pipeline.vote --config configs/tiny.yaml --strategy all      # every strategy, for ablations

From Python: `run_vote(cfg, strategy=None, candidates_dir=None) -> Path` (the pairs directory), or
`vote_frame(candidates, cfg.vote, strategy) -> (pairs, counts)` for the same query in memory without files.

Reads `<run>/candidates/*.parquet` (the `score_<metric>` columns), writes `<run>/pairs/<strategy>/part-*.parquet`
(one file for a small table, up to `WRITER_THREADS` written in parallel for a large one; read the directory with
`read_pairs` or the glob `*.parquet`) in `pipeline.schema.pairs_schema(metrics)`, a `manifest.json` that counts formed, kept and dropped pairs (by
reason), and `diagnostics/` (agreement matrix, score distributions, vote margins, overruled metrics). The vote is
one lazy polars query, streamed batch by batch into parquet; the per-reason counts come out of the same pass.

Bad input (see `pipeline.pairing.inspect_candidates`): an empty table, duplicate image ids, null ids, missing or
non-numeric score columns are errors; non-finite scores are an error unless `vote.bad_scores: drop`, which drops
those images and counts them; prompts with one image form no pair and are counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python pipeline/vote.py`: make the project importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import ConfigError, RunConfig, VoteSection, add_config_arguments, load_config
from pipeline.io import ParallelParquetWriter, atomic_directory, read_manifest, write_manifest
from pipeline.pairing import (
    CandidatesError,
    CandidateStats,
    finite_filter,
    form_pairs,
    inspect_candidates,
    pair_id_expr,
    scan_candidates,
    vote_columns,
    with_image_columns,
)
from pipeline.schema import SCORE_PREFIX, pairs_schema
from pipeline.strategies import (
    REASONS,
    Decision,
    StrategyError,
    VoteRule,
    check_strategy,
    decide,
    default_min_agree,
    disk_name,
    image_columns_needed,
    reason_name,
)
from pipeline.vote_blocks import DICTIONARY_COLUMNS, GroupedCandidates, ZSum, block_schema, decide_block

ALL_STRATEGIES = ("majority", "weighted_majority", "sum", "normalized_sum", "random_metric")
PART_NAME = "part-{:05d}.parquet"
WRITER_THREADS = 2
# Pairs per decided block and per row group (1 << 18 measured no faster: more blocks, more per-block overhead).
ROW_GROUP_ROWS = 1 << 19


def parquet_options(metrics: list[str]) -> dict[str, Any]:
    """Writer settings for the pairs, chosen per column by measurement: encoding the pairs is the vote's largest
    cost (bench_vote, 4.5M pairs of stage-1-like ids, write CPU median 1.05 s -> 0.81 s, file 138 -> 128 MB).

    - no column statistics (nobody filters pairs by min/max); lz4 by default (zstd compressed more, slower);
    - `pair_id`: snappy, faster and smaller than lz4 on these strings;
    - `image_id_w/l`: dictionary indices plus the block's ids, random hex that lz4 shrank by 8 %: uncompressed;
    - `vote_<m>` (-1/0/+1): delta bit-packing, uncompressed: smaller than lz4 and faster.
    `store_schema=False`: readers see the parquet types (UTF-8 strings), not the in-memory string layout.
    """
    votes = [f"vote_{m}" for m in metrics]
    return {
        "write_statistics": False,
        "store_schema": False,
        "compression": {c: "lz4" for c in pairs_schema(metrics).names}
        | {"pair_id": "snappy", "image_id_w": "none", "image_id_l": "none"}
        | {v: "none" for v in votes},
        "column_encoding": {v: "DELTA_BINARY_PACKED" for v in votes},
    }


def make_rule(vote: VoteSection, metrics: list[str]) -> VoteRule:
    """Check the config's per-metric settings against the table's metrics and resolve the defaults."""
    for key, mapping in (("vote.epsilon", vote.epsilon), ("vote.weights", vote.weights)):
        unknown = sorted(set(mapping) - set(metrics))
        if unknown:
            raise StrategyError(f"{key} names {unknown}, which are not among the table's metrics {metrics}")
    min_agree = vote.min_agree or default_min_agree(len(metrics))
    if min_agree > len(metrics):
        raise StrategyError(
            f"vote.min_agree = {min_agree} exceeds the number of metrics ({len(metrics)}: {metrics})"
        )
    if vote.weights and sum(vote.weights.get(m, 1.0) for m in metrics) <= 0:
        raise StrategyError("vote.weights sum to zero: no metric would have a say")
    return VoteRule(metrics=metrics, min_agree=min_agree, weights=dict(vote.weights), seed=vote.seed)


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


def file_schema(metrics: list[str]) -> pa.Schema:
    """`pairs_schema` with polars' in-memory string layout (string views), so handing a batch to the parquet
    writer copies no strings; the file itself stores plain UTF-8 columns with the contract's non-null flags."""
    fields = [f.with_type(pa.string_view()) if f.type == pa.string() else f for f in pairs_schema(metrics)]
    return pa.schema(fields)


def decided_pairs(pairs: pl.LazyFrame, decision: Decision) -> pl.LazyFrame:
    return pairs.with_columns(_a_wins=decision.a_wins, _reason=decision.reason)


def build_vote(
    candidates: pl.LazyFrame, metrics: list[str], rule: VoteRule, vote: VoteSection, strategy: str
) -> pl.LazyFrame:
    """The whole vote as one lazy query: every formed pair with its votes, `_a_wins` and `_reason` (null = kept)."""
    carry = image_columns_needed(strategy)
    candidates = with_image_columns(candidates, rule, vote.normalize_scope, carry)
    pairs = form_pairs(candidates, metrics, vote.epsilon, vote.pairing, vote.random_k, vote.seed, carry=carry)
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


class CellCounter:
    """`count_pairs` for a stream of batches: each pair's (reason, votes_a, votes_b) is one small integer cell,
    counted with `np.bincount` (a group-by per batch cost more than the vote itself at 45M pairs)."""

    def __init__(self, n_metrics: int) -> None:
        self.side = n_metrics + 1
        self.counts = np.zeros((len(REASONS) + 1) * self.side**2, dtype=np.int64)

    def add_votes(self, reason: np.ndarray, votes_a: np.ndarray, votes_b: np.ndarray) -> None:
        """Count one batch of pairs (`reason` 0 = kept)."""
        r, a, b = (x.astype(np.int64) for x in (reason, votes_a, votes_b))
        self.counts += np.bincount((r * self.side + a) * self.side + b, minlength=self.counts.size)

    def frame(self) -> pl.DataFrame:
        cells = np.flatnonzero(self.counts)
        reason, rest = np.divmod(cells, self.side**2)
        return pl.DataFrame(
            {
                "_reason": pl.Series(reason, dtype=pl.UInt8).replace(0, None),
                "votes_a": pl.Series(rest // self.side, dtype=pl.Int16),
                "votes_b": pl.Series(rest % self.side, dtype=pl.Int16),
                "n": pl.Series(self.counts[cells], dtype=pl.UInt32),
            }
        )


def write_pairs(
    decided: pl.LazyFrame, strategy: str, metrics: list[str], directory: Path
) -> tuple[pl.DataFrame, list[str]]:
    """Stream the decided pairs once: count every pair, write the kept ones; returns (counts, files written).

    One consumer of the query, so nothing is buffered for a second one (sharing the join between a sink and a
    count query held up to 4.4 GB at 45M pairs). Orientation runs inside the streaming query (in parallel);
    batches are gathered into row groups of about `ROW_GROUP_ROWS` for the writer threads.
    """
    schema = file_schema(metrics)
    counter = CellCounter(len(metrics))
    stream = decided.select(
        "_reason", _votes_a="votes_a", _votes_b="votes_b", **oriented_columns(strategy, metrics)
    ).collect_batches(maintain_order=False)
    files = max(1, min(WRITER_THREADS, os.cpu_count() or 1))
    writer = ParallelParquetWriter(
        directory,
        PART_NAME,
        schema,
        files,
        use_dictionary=["prompt_id", "prompt", "strategy"],
        **parquet_options(metrics),
    )
    pending: list[pl.DataFrame] = []
    rows = 0
    try:
        for batch in stream:
            counter.add_votes(
                batch["_reason"].fill_null(0).to_numpy(),
                batch["_votes_a"].to_numpy(),
                batch["_votes_b"].to_numpy(),
            )
            if batch["_reason"].null_count() < batch.height:  # some pairs dropped
                batch = batch.filter(pl.col("_reason").is_null())
            if batch.height:
                pending.append(batch.drop("_reason", "_votes_a", "_votes_b"))
                rows += batch.height
            if rows >= ROW_GROUP_ROWS:
                writer.write(_arrow(pending, schema))
                pending, rows = [], 0
        if pending:
            writer.write(_arrow(pending, schema))
    finally:
        names = writer.close()
    return counter.frame(), names


def write_pairs_in_blocks(
    candidates: pl.LazyFrame,
    rule: VoteRule,
    vote: VoteSection,
    strategy: str,
    stats: CandidateStats,
    directory: Path,
) -> tuple[pl.DataFrame, list[str]]:
    """`write_pairs` for `pairing: all` without the join (see `pipeline.vote_blocks`): same pairs, same counts.

    `candidates` is best a collected frame (`prepare_vote(..., in_memory=True)`): it is read whole anyway.
    """
    metrics = rule.metrics
    carry = image_columns_needed(strategy)
    per_image = [c for c in carry if c != "_zsum"]
    enriched = with_image_columns(candidates, rule, vote.normalize_scope, per_image)
    z_sum = ZSum(rule, vote.normalize_scope) if "_zsum" in carry else None
    values = [SCORE_PREFIX + m for m in metrics] + per_image
    cands = GroupedCandidates.collect(enriched, values, stats.prompts, z_sum)
    decision = decide(strategy, rule)
    schema = block_schema(metrics)
    counter = CellCounter(len(metrics))
    files = max(1, min(WRITER_THREADS, os.cpu_count() or 1))
    writer = ParallelParquetWriter(
        directory,
        PART_NAME,
        schema,
        files,
        use_dictionary=list(DICTIONARY_COLUMNS),
        **parquet_options(metrics),
    )
    try:
        for first, end in cands.blocks(ROW_GROUP_ROWS):
            block = decide_block(cands, first, end, metrics, carry, vote.epsilon, decision, strategy, schema)
            counter.add_votes(block.reason, block.votes_a, block.votes_b)
            if block.kept.num_rows:
                writer.write(block.kept)
    finally:
        names = writer.close()
    return counter.frame(), names


def _arrow(frames: list[pl.DataFrame], schema: pa.Schema) -> pa.Table:
    return pl.concat(frames, rechunk=False).to_arrow().cast(schema)


@dataclass
class PreparedVote:
    """Checked candidates and resolved rules: everything `build_vote` needs, and the counts of the input pass."""

    candidates: pl.LazyFrame
    metrics: list[str]
    rule: VoteRule
    stats: CandidateStats
    strategy: str  # as written on disk


def prepare_vote(
    candidates: pl.LazyFrame, where: str, vote: VoteSection, strategy: str, *, in_memory: bool = False
) -> PreparedVote:
    """Validate columns, strategy and config against the table; one pass over the ids and scores.

    `in_memory` (the blocked vote, which holds the table anyway): read the table once and check it in memory;
    `candidates` is then that collected frame. At 10M images checking the file took 1.9 s, checking the frame
    in memory 0.4 s.
    """
    candidates, metrics = vote_columns(candidates, where, vote.metrics)
    check_strategy(strategy, metrics)
    rule = make_rule(vote, metrics)
    if in_memory:
        candidates = candidates.collect().lazy()
    stats = inspect_candidates(candidates, metrics, where, vote.bad_scores, in_memory=in_memory)
    if stats.images_dropped_nonfinite:
        candidates = candidates.filter(finite_filter(metrics))
    return PreparedVote(candidates, metrics, rule, stats, disk_name(strategy))


def vote_frame(
    candidates: pl.DataFrame | pl.LazyFrame, vote: VoteSection, strategy: str | None = None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The vote in memory, no files: (kept pairs in the pairs schema, the manifest's counts). For notebooks/tests."""
    prepared = prepare_vote(candidates.lazy(), "<frame>", vote, strategy or vote.strategy)
    decided = build_vote(
        prepared.candidates, prepared.metrics, prepared.rule, vote, prepared.strategy
    ).collect()
    kept = oriented_pairs(decided.lazy(), prepared.strategy, prepared.metrics).collect()
    return kept, summarise_counts(count_pairs(decided), prepared.stats)


def run_vote(cfg: RunConfig, strategy: str | None = None, candidates_dir: Path | None = None) -> Path:
    """Vote with one strategy (default `cfg.vote.strategy`) and write `<run>/pairs/<strategy>/`; returns that dir.

    Everything is written into a staging directory that replaces the previous one whole only when complete: a
    reader never sees half a vote, and a failed one leaves the previous pairs as they were.
    """
    started = time.perf_counter()
    vote = cfg.vote
    candidates_dir = Path(candidates_dir or cfg.output_dir / "candidates")
    lf, _ = scan_candidates(candidates_dir, vote.metrics)
    blocked = vote.pairing == "all"
    p = prepare_vote(lf, str(candidates_dir), vote, strategy or vote.strategy, in_memory=blocked)

    final = cfg.output_dir / "pairs" / p.strategy
    with atomic_directory(final) as stage:
        if blocked:
            counts, files = write_pairs_in_blocks(p.candidates, p.rule, vote, p.strategy, p.stats, stage)
        else:
            decided = build_vote(p.candidates, p.metrics, p.rule, vote, p.strategy)
            counts, files = write_pairs(decided, p.strategy, p.metrics, stage)
        vote_seconds = time.perf_counter() - started

        diagnostics: dict[str, Any] = {}
        if vote.diagnostics:
            from pipeline.vote_diagnostics import write_diagnostics

            diagnostics = write_diagnostics(
                stage / "diagnostics", p.candidates, p.metrics, p.rule, vote, counts, p.strategy, p.stats
            )
        write_manifest(
            stage,
            stage="vote",
            strategy=p.strategy,
            metrics=p.metrics,
            pairing=vote.pairing,
            min_agree=p.rule.min_agree,
            epsilon={m: vote.epsilon.get(m, 0.0) for m in p.metrics},
            weights={m: vote.weights.get(m, 1.0) for m in p.metrics},
            candidates_dir=str(candidates_dir),
            files=files,
            counts=summarise_counts(counts, p.stats),
            diagnostics=diagnostics,
            config=vote.model_dump(mode="json"),
            timings={"vote_s": round(vote_seconds, 3), "total_s": round(time.perf_counter() - started, 3)},
        )
    return final


def summarise_counts(counts: pl.DataFrame, stats: CandidateStats) -> dict[str, Any]:
    """Formed = kept + Σ dropped; formed equals the possible pairs for `all` pairing (checked by the tests)."""
    by_reason = counts.group_by("_reason").agg(pl.col("n").sum()).sort("_reason", nulls_last=True)
    dropped = {reason_name(r): int(n) for r, n in by_reason.iter_rows() if r is not None}
    kept = int(by_reason.filter(pl.col("_reason").is_null())["n"].sum())
    return {
        "candidates": stats.rows,
        "images_dropped_nonfinite": stats.images_dropped_nonfinite,
        "nonfinite_by_metric": stats.nonfinite,
        "prompts": stats.prompts,
        "prompts_with_one_image": stats.prompts_with_one_image,
        "pairs_possible": stats.pairs_possible,
        "pairs_formed": kept + sum(dropped.values()),
        "pairs_kept": kept,
        "pairs_dropped": dropped,
    }


def read_pairs(run_dir: Path, strategy: str = "majority") -> pl.LazyFrame:
    """The pairs of one strategy, lazily (what the trainer and the notebook read)."""
    directory = Path(run_dir) / "pairs" / disk_name(strategy)
    read_manifest(directory)  # a directory without a manifest is an unfinished write
    return pl.scan_parquet(directory / "*.parquet")


def expand_strategies(names: list[str], metrics: list[str]) -> list[str]:
    """`all` means every strategy of the ablation, with one `single_<metric>` per metric."""
    out: list[str] = []
    for name in names:
        out += [*ALL_STRATEGIES, *(f"single_{m}" for m in metrics)] if name == "all" else [name]
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--strategy",
        action="append",
        default=[],
        help="majority, single:<metric>, random_metric, sum, normalized_sum, weighted_majority, or all "
        "(repeatable; default: vote.strategy of the config)",
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
