"""Evaluation, ablation and job helpers that need no Ray: pairing base with tuned, tags, variants, placebo labels."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.ablation import Variant, parse_variant, shuffle_pair_labels, variant_config
from pipeline.config import load_config
from pipeline.evaluate import EvalError, TunedModel, fingerprint, paired, parse_tuned, read_scores
from pipeline.io import write_parquet_atomic
from pipeline.job import round_config
from pipeline.schema import SCORE_PREFIX
from pipeline.synthetic_candidates import random_candidates
from pipeline.vote import run_vote


def _scores(model: str, values: dict[str, list[float]], seeds: list[int]) -> pl.DataFrame:
    n = len(seeds)
    return pl.DataFrame(
        {
            "prompt_id": ["p0"] * n,
            "prompt": ["a cat"] * n,
            "seed": seeds,
            "image_id": [f"{model}-{s}" for s in seeds],
            **{SCORE_PREFIX + m: v for m, v in values.items()},
        }
    )


def test_paired_matches_items_by_prompt_and_seed_and_scores_each_metric():
    base = _scores("b", {"x": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 0.0]}, [10, 11, 12])
    # Tuned rows in another order and with one seed the base lacks: only common items are compared.
    tuned = _scores("t", {"x": [5.0, 1.0, 2.0, 9.0], "y": [1.0, -1.0, 0.0, 1.0]}, [12, 10, 11, 13])
    rows = paired(base, tuned, "run", ["x", "y"])
    assert rows["seed"].to_list() == [10, 11, 12]
    assert rows["image_id_base"].to_list() == ["b-10", "b-11", "b-12"]
    assert rows["image_id_tuned"].to_list() == ["t-10", "t-11", "t-12"]
    # seed 10: x 1 vs 1 (tie), y −1 vs 0 (loss); seed 11: x 2 vs 2, y 0 vs 0 (ties); seed 12: 5 vs 3, 1 vs 0.
    assert rows["win_x"].to_list() == [0.5, 0.5, 1.0]
    assert rows["win_y"].to_list() == [0.0, 0.5, 1.0]
    assert rows["win_majority"].to_list() == [0.0, 0.5, 1.0]
    assert rows["x_tuned"].to_list() == [1.0, 2.0, 5.0] and rows["x_base"].to_list() == [1.0, 2.0, 3.0]


def test_identical_models_tie_everywhere():
    base = _scores("b", {"x": [1.0, 2.0], "y": [3.0, 4.0]}, [1, 2])
    rows = paired(base, base.with_columns(pl.col("image_id") + "t"), "same", ["x", "y"])
    assert rows["win_x"].to_list() == [0.5, 0.5]
    assert rows["win_majority"].to_list() == [0.5, 0.5]


def test_read_scores_names_the_missing_model(tmp_path):
    table = random_candidates(2, 3, ["x"], seed=0)
    write_parquet_atomic(table, tmp_path / "candidates" / "part-0.parquet")
    assert read_scores(tmp_path / "candidates", "synthetic", ["x"]).height == 6
    # The same rows written again (a second evaluation of the directory) are still 6 items, not 12.
    write_parquet_atomic(table, tmp_path / "candidates" / "part-1.parquet")
    assert read_scores(tmp_path / "candidates", "synthetic", ["x"]).height == 6
    with pytest.raises(EvalError, match="no images of model 'other'"):
        read_scores(tmp_path / "candidates", "other", ["x"])


def test_fingerprint_changes_when_weights_are_rewritten(tmp_path):
    (tmp_path / "unet").mkdir()
    weights = tmp_path / "unet" / "w.bin"
    weights.write_bytes(b"abc")
    first = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == first
    weights.write_bytes(b"abcd")
    os.utime(weights, ns=(1, 1))
    assert fingerprint(tmp_path) != first
    with pytest.raises(EvalError, match="not found"):
        fingerprint(tmp_path / "missing")


def test_tuned_specs(tmp_path):
    final = tmp_path / "train" / "sum" / "final"
    final.mkdir(parents=True)
    assert parse_tuned(str(final)) == TunedModel("sum", weights_dir=final)
    assert parse_tuned(f"static={final}").name == "static"
    with pytest.raises(EvalError, match="exactly one"):
        TunedModel("x")


def test_variant_specs():
    assert parse_variant("majority") == Variant("majority", "majority")
    assert parse_variant("static=majority:train.ref_update.mode=none") == Variant(
        "static", "majority", ("train.ref_update.mode=none",)
    )
    assert parse_variant("single:pickscore") == Variant("single_pickscore", "single:pickscore")
    assert parse_variant("placebo=majority:shuffle:train.seed=1") == Variant(
        "placebo", "majority", ("train.seed=1",), True
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_variant("x=majority:oops")


def test_variant_and_round_configs(tmp_path):
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", "run.rounds=3"])
    v = variant_config(cfg, parse_variant("s=single:clip:train.ref_update.mode=none"), tmp_path / "v")
    assert (v.vote.strategy, v.train.strategy, v.train.ref_update.mode) == (
        "single:clip",
        "single_clip",
        "none",
    )
    assert cfg.train.ref_update.mode == "hard"  # the original is untouched
    r2 = round_config(cfg, 2, "/models/policy1")
    assert r2.output_dir == tmp_path / "round_2"
    assert r2.model.pretrained == "/models/policy1"
    assert r2.generation.seed_offset == cfg.generation.seed_offset + 2 * cfg.generation.num_candidates
    one = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}"])
    assert round_config(one, 0, one.model.pretrained).output_dir == tmp_path


def test_shuffled_labels_swap_a_seeded_half_consistently(tmp_path):
    metrics = ["a", "b", "c"]
    write_parquet_atomic(random_candidates(6, 4, metrics, seed=1), tmp_path / "candidates" / "part-0.parquet")
    # Three metrics here: a strict majority (2 of 3), not configs/tiny.yaml's 4 of 5.
    cfg = load_config(
        "configs/tiny.yaml", [f"run.output_dir={tmp_path}", "vote.diagnostics=false", "vote.min_agree=null"]
    )
    pairs_dir = run_vote(cfg)
    before = pq.read_table(next(pairs_dir.glob("*.parquet"))).to_pandas()
    n = shuffle_pair_labels(pairs_dir, seed=0)
    after = pq.read_table(next(pairs_dir.glob("*.parquet"))).to_pandas()
    swapped = before.image_id_w != after.image_id_w
    assert n == swapped.sum() and 0.25 * len(before) < n < 0.75 * len(before)
    assert (after.image_id_w[swapped] == before.image_id_l[swapped]).all()
    assert (after.votes_w[swapped] == before.votes_l[swapped]).all()
    assert (after.vote_a[swapped] == -before.vote_a[swapped]).all()
    assert (after[~swapped] == before[~swapped]).all().all()
    # The majority label now agrees with the metrics on only the unswapped pairs.
    agree = (np.sign(after[[f"vote_{m}" for m in metrics]].sum(axis=1)) > 0).mean()
    assert agree == pytest.approx(1 - n / len(before))
