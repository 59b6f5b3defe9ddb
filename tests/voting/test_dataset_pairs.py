"""Relabel mode on an imported Pick-a-Pic-like dataset: `pairing: given` relabels exactly the dataset's pairs, and
the `human` strategy writes the dataset's own labels; both on the same candidates, joinable on `pair_id`."""

from __future__ import annotations

import polars as pl
import pytest
from helpers.relabel import relabel_run

from pipeline.io import read_manifest
from pipeline.paths import RunPaths
from pipeline.testing.pickapic import PICKAPIC_LIKE_FACTS as FACTS
from pipeline.vote import main
from pipeline.voting import read_pairs, run_vote, vote_frame
from pipeline.voting.dataset_pairs import given_pairs
from pipeline.voting.pairing import CandidatesError


def dataset_pair_ids(cfg) -> set[str]:
    """The decided image pairs of the dataset, unordered, as pair ids (independent of the code under test)."""
    rows = pl.read_parquet(RunPaths(cfg.output_dir).human_pairs / "*.parquet")
    decided = rows.filter(pl.col("label_0") != pl.col("label_1"))
    return {
        f"{min(a, b)}~{max(a, b)}" for a, b in zip(decided["image_id_0"], decided["image_id_1"], strict=True)
    }


def test_relabel_mode_votes_on_the_datasets_own_pairs_by_default(tmp_path):
    cfg = relabel_run(tmp_path)
    assert cfg.vote.pairing == "auto"
    out = run_vote(cfg, "majority")
    manifest = read_manifest(out)
    counts = manifest["counts"]
    assert manifest["pairing"] == "given"
    # Every pair formed is one the dataset compared; none across different comparisons of the same caption.
    assert counts["pairs_formed"] == FACTS["distinct_decided_pairs"] < FACTS["all_pairs"]
    assert counts["pairs_formed"] == counts["pairs_kept"] + sum(counts["pairs_dropped"].values())
    assert counts["given"] == {
        "dataset_rows": FACTS["rows"],
        "human_ties": FACTS["human_ties"],
        "same_image": 0,
        "repeated": FACTS["given_repeated"],
        "distinct_pairs": FACTS["distinct_decided_pairs"],
        "without_candidate": 0,
    }
    kept = read_pairs(cfg.output_dir, "majority").collect()
    assert kept.height == counts["pairs_kept"] > 0
    assert set(kept["pair_id"]) <= dataset_pair_ids(cfg)


def test_pairing_all_stays_available_and_pairs_across_comparisons(tmp_path):
    cfg = relabel_run(tmp_path, "vote.pairing=all")
    counts = read_manifest(run_vote(cfg, "majority"))["counts"]
    assert counts["pairs_formed"] == FACTS["all_pairs"]


def test_given_pairs_whose_images_were_not_scored_are_counted(tmp_path):
    cfg = relabel_run(tmp_path)
    candidates = RunPaths(cfg.output_dir).candidates
    table = pl.read_parquet(candidates / "*.parquet")
    lost = table["image_id"][0]  # as if stage 1 had quarantined it
    table.filter(pl.col("image_id") != lost).write_parquet(next(candidates.glob("part-*.parquet")))
    counts = read_manifest(run_vote(cfg, "majority"))["counts"]
    touching = sum(lost in pid.split("~") for pid in dataset_pair_ids(cfg))
    assert touching > 0
    assert counts["given"]["without_candidate"] == touching
    assert counts["pairs_formed"] == FACTS["distinct_decided_pairs"] - touching


def test_vote_frame_relabels_given_pairs_in_memory(tmp_path):
    cfg = relabel_run(tmp_path)
    given, _ = given_pairs(RunPaths(cfg.output_dir))
    candidates = pl.read_parquet(RunPaths(cfg.output_dir).candidates / "*.parquet")
    pairs, counts = vote_frame(candidates, cfg.vote, "majority", given_pairs=given)
    assert counts["pairs_formed"] == FACTS["distinct_decided_pairs"]
    assert set(pairs["pair_id"]) <= dataset_pair_ids(cfg)


def test_human_strategy_writes_the_datasets_labels(tmp_path, capsys):
    cfg = relabel_run(tmp_path)
    config = tmp_path / "relabel.yaml"
    config.write_text(cfg.to_yaml())
    assert main(["--config", str(config), "--strategy", "human"]) == 0
    assert "human: kept 7 of 11 pairs" in capsys.readouterr().out
    out = RunPaths(cfg.output_dir).pairs("human")
    counts = read_manifest(out)["counts"]
    assert counts["pairs_kept"] == FACTS["human_pairs_kept"]
    assert counts["pairs_dropped"] == {
        "human_tie": FACTS["human_ties"],
        "repeated": FACTS["human_repeated"],
        "contradicted": FACTS["human_contradicted"],
    }
    assert counts["pairs_formed"] == counts["pairs_kept"] + sum(counts["pairs_dropped"].values())
    human = read_pairs(cfg.output_dir, "human").collect()
    assert human.height == FACTS["human_pairs_kept"]
    assert set(human["strategy"]) == {"human"} and set(human["confidence"]) == {1.0}
    # Each winner is the image the dataset's users preferred.
    rows = pl.read_parquet(RunPaths(cfg.output_dir).human_pairs / "*.parquet").filter(
        pl.col("label_0") != pl.col("label_1")
    )
    preferred = {
        (w, lo)
        for a, b, first in zip(rows["image_id_0"], rows["image_id_1"], rows["label_0"] > 0.5, strict=True)
        for w, lo in [(a, b) if first else (b, a)]
    }
    assert set(zip(human["image_id_w"], human["image_id_l"], strict=True)) <= preferred
    # The vote and the humans label the same image pairs (a join on pair_id lines them up).
    run_vote(cfg, "majority")
    voted = read_pairs(cfg.output_dir, "majority").collect()
    assert voted.join(human, on="pair_id").height > 0


def test_given_and_human_need_an_imported_dataset(tmp_path):
    cfg = relabel_run(tmp_path)
    for sub in RunPaths(cfg.output_dir).human_pairs.iterdir():
        sub.unlink()
    with pytest.raises(CandidatesError, match="run stage 1 in relabel mode"):
        run_vote(cfg, "human")
    with pytest.raises(CandidatesError, match="run stage 1 in relabel mode"):
        run_vote(cfg, "majority")
