"""Writing the pairs: parquet settings chosen per column by measurement, and the two streaming writers.

Both writers count every formed pair by (drop reason, votes for a, votes for b) in the same pass that writes the
kept ones (`CellCounter`), and hand row groups to `pipeline.io.ParallelParquetWriter` threads:
- `write_pairs`: the decided pairs of the lazy query (`pipeline.voting.query.build_vote`), any pairing;
- `write_pairs_in_blocks`: `pairing: all` without the join, block by block (`pipeline.voting.blocks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import VoteSection
from pipeline.io import ParallelParquetWriter
from pipeline.paths import part_name
from pipeline.schema import SCORE_PREFIX, pairs_schema
from pipeline.voting.blocks import DICTIONARY_COLUMNS, GroupedCandidates, ZSum, block_schema, decide_block
from pipeline.voting.pairing import CandidateStats, with_image_columns
from pipeline.voting.query import oriented_columns
from pipeline.voting.strategies import REASONS, VoteRule, decide, image_columns_needed

PART_NAME = part_name("{:05d}")
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


def open_writer(
    directory: Path, schema: pa.Schema, metrics: list[str], dictionary: list[str]
) -> ParallelParquetWriter:
    """One writer thread per core (at most `WRITER_THREADS`), parts named `part-00000.parquet`, ... ."""
    files = max(1, min(WRITER_THREADS, os.cpu_count() or 1))
    return ParallelParquetWriter(
        directory, PART_NAME, schema, files, use_dictionary=dictionary, **parquet_options(metrics)
    )


def file_schema(metrics: list[str]) -> pa.Schema:
    """`pairs_schema` with polars' in-memory string layout (string views), so handing a batch to the parquet
    writer copies no strings; the file itself stores plain UTF-8 columns with the contract's non-null flags."""
    fields = [f.with_type(pa.string_view()) if f.type == pa.string() else f for f in pairs_schema(metrics)]
    return pa.schema(fields)


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
    writer = open_writer(directory, schema, metrics, dictionary=["prompt_id", "prompt", "strategy"])
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
    """`write_pairs` for `pairing: all` without the join (see `pipeline.voting.blocks`): same pairs, same counts.

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
    writer = open_writer(directory, schema, metrics, dictionary=list(DICTIONARY_COLUMNS))
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
