"""The imported dataset's own pairs (relabel mode): what `pairing: given` relabels, and the `human` strategy.

Stage 1 in relabel mode (`prompts.pairs`, a Pick-a-Pic-layout table) scores the dataset's images into the
candidates table and keeps the dataset's labels in `<run>/human_pairs/` (`pipeline.data.pickapic`:
`prompt_id`, `prompt`, `image_id_0`, `image_id_1`, `label_0`, `label_1`). Two ways to train on them:

- `pairing: given` (the default there, through `pairing: auto`): the vote relabels exactly the pairs the
  dataset compared, as the reference trainer's `--choice_model` does. As there, rows the humans left tied
  (label 0.5 / 0.5) are left out first; the same two images compared several times form one pair.
- strategy `human`: the dataset's own labels, no metric involved (Diffusion-DPO on Pick-a-Pic, the paper's
  baseline), written to `<run>/pairs/human/` in the pairs schema (no `vote_<metric>` columns, confidence 1).

Both restrict to images present in the candidates table and count what they leave out, and a pair has the same
`pair_id` under both, so the two labellings of one pair compare by a join on `pair_id`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.io import atomic_directory, write_manifest, write_parquet_atomic
from pipeline.paths import RunPaths, part_name, table_files
from pipeline.schema import PAIR_FIELDS
from pipeline.voting.pairing import CandidatesError

HUMAN = "human"


def read_dataset_pairs(paths: RunPaths) -> pl.DataFrame:
    """`<run>/human_pairs/` as one frame; missing means stage 1 did not run in relabel mode."""
    files = table_files(paths.human_pairs)
    if not files:
        raise CandidatesError(
            f"{paths.human_pairs}: no dataset pairs. `pairing: given` and the `human` strategy need the pairs "
            "of an imported dataset: run stage 1 in relabel mode (prompts.pairs) first"
        )
    return pl.read_parquet(files)


def given_pairs(paths: RunPaths) -> tuple[pl.LazyFrame, dict[str, int]]:
    """The dataset's decided pairs, each once, as (prompt_id, image_id_a, image_id_b) with a < b by id, and
    the counts of what was left out before the vote (human ties, an image paired with itself, repeats)."""
    rows = read_dataset_pairs(paths)
    decided = rows.filter(pl.col("label_0") != pl.col("label_1"))
    distinct_images = decided.filter(pl.col("image_id_0") != pl.col("image_id_1"))
    pairs = distinct_images.select(
        "prompt_id",
        image_id_a=pl.min_horizontal("image_id_0", "image_id_1"),
        image_id_b=pl.max_horizontal("image_id_0", "image_id_1"),
    ).unique(subset=["image_id_a", "image_id_b"], keep="first", maintain_order=True)
    counts = {
        "dataset_rows": rows.height,
        "human_ties": rows.height - decided.height,
        "same_image": decided.height - distinct_images.height,
        "repeated": distinct_images.height - pairs.height,
        "distinct_pairs": pairs.height,
    }
    return pairs.lazy(), counts


def human_pairs(paths: RunPaths, candidates_dir: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The dataset's labels in the pairs schema, restricted to the candidates, with every dropped row counted:
    formed (the dataset's rows) = kept + Σ dropped."""
    from pipeline.data.pickapic import human_pairs_to_pairs

    rows = read_dataset_pairs(paths)
    decided = rows.filter(pl.col("label_0") != pl.col("label_1"))
    distinct_images = decided.filter(pl.col("image_id_0") != pl.col("image_id_1"))
    first_wins = pl.col("label_0") > pl.col("label_1")
    oriented = distinct_images.select(
        w=pl.when(first_wins).then("image_id_0").otherwise("image_id_1"),
        l=pl.when(first_wins).then("image_id_1").otherwise("image_id_0"),
    ).unique()
    labelled = pl.from_arrow(human_pairs_to_pairs(rows.to_arrow()))
    assert isinstance(labelled, pl.DataFrame)
    files = table_files(candidates_dir)
    if not files:
        raise CandidatesError(f"{candidates_dir}: no candidates files")
    present = pl.scan_parquet(files).select("image_id").collect()
    kept = labelled.join(present, left_on="image_id_w", right_on="image_id", how="semi").join(
        present, left_on="image_id_l", right_on="image_id", how="semi"
    )
    dropped = {
        "human_tie": rows.height - decided.height,
        "same_image": decided.height - distinct_images.height,
        "repeated": distinct_images.height - oriented.height,
        "contradicted": oriented.height - labelled.height,
        "without_candidate": labelled.height - kept.height,
    }
    counts = {
        "candidates": present.height,
        "pairs_formed": rows.height,
        "pairs_kept": kept.height,
        "pairs_dropped": {k: v for k, v in dropped.items() if v},
    }
    return kept, counts


def write_human_pairs(paths: RunPaths, candidates_dir: Path) -> Path:
    """Write `<run>/pairs/human/` (replaced whole, as every vote is) and return it."""
    started = time.perf_counter()
    pairs, counts = human_pairs(paths, candidates_dir)
    final = paths.pairs(HUMAN)
    with atomic_directory(final) as stage:
        write_parquet_atomic(pairs.to_arrow().cast(pa.schema(PAIR_FIELDS)), stage / part_name(0))
        write_manifest(
            stage,
            stage="vote",
            strategy=HUMAN,
            metrics=[],
            pairing="given",
            source=str(paths.human_pairs),
            candidates_dir=str(candidates_dir),
            files=[part_name(0)],
            counts=counts,
            timings={"total_s": round(time.perf_counter() - started, 3)},
        )
    return final
