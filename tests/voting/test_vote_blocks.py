"""The blocked vote (`pairing: all`, written by `pipeline.voting.blocks`) writes exactly what the lazy join computes.

`vote_frame` is the join path, kept for the other pairings, notebooks and the diagnostics; `run_vote` with
`pairing: all` takes the blocked path. For every strategy, on tables with ties, prompts of one image and uneven
prompt sizes, cut into many small blocks: the same kept pairs, column for column, and the same counts.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.configs import run_config
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.voting.blocks as vote_blocks
import pipeline.voting.writer as vote_writer
from pipeline.io import read_manifest, write_parquet_atomic
from pipeline.schema import pairs_schema
from pipeline.testing.candidates import candidates_from_scores
from pipeline.voting import ALL_STRATEGIES, run_vote, vote_frame
from pipeline.voting.blocks import fixed_width_less, join_ids

METRICS = ["hps", "pick", "aes", "ir"]  # an even count: split votes and dropped pairs happen
STRATEGIES = [*ALL_STRATEGIES, "single:pick"]


def uneven_table(seed: int, n_prompts: int = 9, discrete: bool = True):
    """Prompts of 1 to 7 images; discrete scores make ties and split votes common."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_prompts)
    frames = []
    for p, k in enumerate(sizes):
        scores = {
            m: rng.integers(0, 4, (1, k)).astype(np.float32)
            if discrete
            else rng.normal(size=(1, k)).astype(np.float32)
            for m in METRICS
        }
        frames.append(pl.from_arrow(candidates_from_scores([f"prompt {seed}-{p}"], scores)))
    return pl.concat(frames)


def written_and_reference(tmp_path, table: pl.DataFrame, strategy: str, **vote: object):
    write_parquet_atomic(table.to_arrow(), tmp_path / "candidates" / "part-00000.parquet")
    settings_ = {"strategy": strategy, "diagnostics": False, "epsilon": {"aes": 0.5}, **vote}
    cfg = run_config(tmp_path, vote=settings_)
    out = run_vote(cfg, strategy)
    reference, counts = vote_frame(table, cfg.vote, strategy)
    return out, reference, counts


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blocked_vote_writes_what_the_join_computes(tmp_path, monkeypatch, strategy):
    monkeypatch.setattr(
        vote_writer, "ROW_GROUP_ROWS", 7
    )  # many blocks, some a single prompt larger than that
    monkeypatch.setattr(vote_blocks, "Z_CHUNK_ROWS", 5)  # z-scores in many chunks of whole prompts
    table = pl.concat([uneven_table(seed) for seed in range(3)])
    out, reference, counts = written_and_reference(tmp_path, table, strategy)
    written = pl.read_parquet(out / "*.parquet")
    assert pq.read_schema(next(out.glob("*.parquet"))) == pairs_schema(METRICS)
    assert written.schema == reference.schema
    assert written.sort("pair_id").equals(reference.sort("pair_id"))
    assert read_manifest(out)["counts"] == counts
    assert counts["pairs_kept"] > 0 and (strategy == "random_metric" or counts["pairs_dropped"])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), strategy=st.sampled_from(STRATEGIES), block=st.integers(1, 40))
def test_blocked_vote_matches_the_join_on_random_tables(tmp_path_factory, seed, strategy, block):
    tmp_path = tmp_path_factory.mktemp("blocks")
    original = vote_writer.ROW_GROUP_ROWS
    vote_writer.ROW_GROUP_ROWS = block
    try:
        out, reference, counts = written_and_reference(
            tmp_path,
            uneven_table(seed, n_prompts=5, discrete=seed % 2 == 0),
            strategy,
            normalize_scope="table",
        )
    finally:
        vote_writer.ROW_GROUP_ROWS = original
    assert pl.read_parquet(out / "*.parquet").sort("pair_id").equals(reference.sort("pair_id"))
    assert read_manifest(out)["counts"] == counts


def test_ids_of_different_lengths_take_the_general_pair_id_path(tmp_path):
    table = uneven_table(5).with_columns(
        image_id=pl.col("image_id").str.slice(0, pl.int_range(pl.len()) % 5 + 3)
    )
    assert table["image_id"].str.len_bytes().n_unique() > 1 and table["image_id"].is_unique().all()
    out, reference, counts = written_and_reference(tmp_path, table, "majority")
    assert pl.read_parquet(out / "*.parquet").sort("pair_id").equals(reference.sort("pair_id"))
    assert read_manifest(out)["counts"] == counts


def test_a_table_where_every_pair_is_dropped_still_writes_an_empty_readable_table(tmp_path):
    flat = {m: np.ones((2, 3), np.float32) for m in METRICS}
    out, reference, counts = written_and_reference(
        tmp_path, pl.from_arrow(candidates_from_scores(["a", "b"], flat)), "majority"
    )
    assert reference.height == 0 and counts["pairs_dropped"] == {"no_majority_all_tied": 6}
    written = pl.read_parquet(out / "*.parquet")
    assert written.height == 0 and written.schema == reference.schema


def test_rows_in_any_order_write_the_same_pairs(tmp_path):
    """Stage 1 writes prompt-major, but a resume or another writer may not: shuffled rows are grouped first."""
    table = pl.concat([uneven_table(seed) for seed in range(3)])
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=7)
    assert not shuffled["prompt_id"].equals(table["prompt_id"])
    out, reference, counts = written_and_reference(tmp_path, shuffled, "majority")
    assert pl.read_parquet(out / "*.parquet").sort("pair_id").equals(reference.sort("pair_id"))
    assert read_manifest(out)["counts"] == counts


@settings(max_examples=30, deadline=None)
@given(
    ids=st.lists(
        st.text(alphabet="ab~", min_size=19, max_size=19).map(lambda s: "prefix_x" + s),
        min_size=2,
        max_size=12,
    )
)
def test_fixed_width_ids_are_compared_as_strings(ids):
    """Ids sharing their first 8 or 16 bytes are decided by a later 8-byte word; pair ids put the smaller first."""
    rows = np.frombuffer("".join(ids).encode(), np.uint8).reshape(len(ids), -1)
    a, b = np.triu_indices(len(ids), 1)
    expected = [ids[i] < ids[j] for i, j in zip(a, b, strict=True)]
    assert fixed_width_less(rows, a, b).tolist() == expected
    pair_ids = join_ids(pa.array(ids, pa.large_string()), a, b, "|").to_pylist()
    assert pair_ids == [f"{min(ids[i], ids[j])}|{max(ids[i], ids[j])}" for i, j in zip(a, b, strict=True)]
