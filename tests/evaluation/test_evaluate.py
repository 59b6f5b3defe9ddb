"""Evaluation, ablation and job helpers that need no Ray: pairing base with tuned, tags, variants, placebo labels."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.evaluation.cache import Reuse, count_reuse, planned_ids, read_model_scores
from pipeline.evaluation.compare import paired
from pipeline.evaluation.models import EvalError, TunedModel, base_model, fingerprint, parse_tuned, tuned_tag
from pipeline.io import write_parquet_atomic
from pipeline.schema import SCORE_PREFIX
from pipeline.testing.candidates import random_candidates
from pipeline.voting import run_vote
from pipeline.workflows.ablation import Variant, parse_variant, shuffle_pair_labels, variant_config
from pipeline.workflows.job import round_config


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
    # Model rows in another order and with one seed the baseline lacks: only common items are compared.
    tuned = _scores("t", {"x": [5.0, 1.0, 2.0, 9.0], "y": [1.0, -1.0, 0.0, 1.0]}, [12, 10, 11, 13])
    rows = paired(base, tuned, "run", ["x", "y"])
    assert rows["seed"].to_list() == [10, 11, 12]
    assert rows["image_id_baseline"].to_list() == ["b-10", "b-11", "b-12"]
    assert rows["image_id_model"].to_list() == ["t-10", "t-11", "t-12"]
    # seed 10: x 1 vs 1 (tie), y −1 vs 0 (loss); seed 11: x 2 vs 2, y 0 vs 0 (ties); seed 12: 5 vs 3, 1 vs 0.
    assert rows["win_x"].to_list() == [0.5, 0.5, 1.0]
    assert rows["win_y"].to_list() == [0.0, 0.5, 1.0]
    assert rows["win_majority"].to_list() == [0.0, 0.5, 1.0]
    assert rows["won_all"].to_list() == [0.0, 0.0, 1.0]
    assert rows["lost_all"].to_list() == [0.0, 0.0, 0.0]
    assert rows["x_model"].to_list() == [1.0, 2.0, 5.0] and rows["x_baseline"].to_list() == [1.0, 2.0, 3.0]


def test_head_to_head_is_symmetric_item_by_item():
    rng = np.random.default_rng(3)
    seeds = list(range(30))
    a = _scores("a", {m: rng.integers(0, 3, 30).astype(float).tolist() for m in "xyz"}, seeds)
    b = _scores("b", {m: rng.integers(0, 3, 30).astype(float).tolist() for m in "xyz"}, seeds)
    ab, ba = paired(b, a, "a", list("xyz")), paired(a, b, "b", list("xyz"))
    for col in ["win_x", "win_y", "win_z", "win_majority"]:
        np.testing.assert_array_equal(ab[col].to_numpy(), 1.0 - ba[col].to_numpy())
    np.testing.assert_array_equal(ab["won_all"].to_numpy(), ba["lost_all"].to_numpy())
    assert ab["image_id_model"].to_list() == ba["image_id_baseline"].to_list()


def test_identical_models_tie_everywhere():
    base = _scores("b", {"x": [1.0, 2.0], "y": [3.0, 4.0]}, [1, 2])
    rows = paired(base, base.with_columns(pl.col("image_id") + "t"), "same", ["x", "y"])
    assert rows["win_x"].to_list() == [0.5, 0.5]
    assert rows["win_majority"].to_list() == [0.5, 0.5]
    assert rows["won_all"].to_list() == [0.0, 0.0] and rows["lost_all"].to_list() == [0.0, 0.0]


def test_read_model_scores_reads_only_the_wanted_images_once(tmp_path):
    table = random_candidates(2, 3, ["x"], seed=0)
    write_parquet_atomic(table, tmp_path / "candidates" / "part-0.parquet")
    ids = set(table.column("image_id").to_pylist())
    assert read_model_scores(tmp_path / "candidates", {"synthetic": ids}, ["x"])["synthetic"].height == 6
    # The same rows written again (a second evaluation of the directory) are still 6 items, not 12.
    write_parquet_atomic(table, tmp_path / "candidates" / "part-1.parquet")
    assert read_model_scores(tmp_path / "candidates", {"synthetic": ids}, ["x"])["synthetic"].height == 6
    # Images of other evaluations in the same cache are not read.
    some = set(list(sorted(ids))[:2])
    assert read_model_scores(tmp_path / "candidates", {"synthetic": some}, ["x"])["synthetic"].height == 2
    with pytest.raises(EvalError, match="no images of model 'other'"):
        read_model_scores(tmp_path / "candidates", {"other": ids}, ["x"])


def test_reuse_is_counted_per_model():
    tags = {"base": "base:m", "a": "tuned:a:1", "b": "tuned:b:2"}
    planned = {name: planned_ids(tag, ["p1", "p2"], [7, 8]) for name, tag in tags.items()}
    # A first comparison (a vs base) cached base and a; the next (b vs a) needs a again and b.
    cached = planned["base"] | planned["a"]
    second = {name: planned[name] for name in ("a", "b")}
    reuse = count_reuse(second, cached, cached | planned["b"])
    assert reuse == {
        "a": Reuse(planned=4, reused=4, generated=0),
        "b": Reuse(planned=4, reused=0, generated=4),
    }
    assert planned["a"] == planned_ids("tuned:a:1", ["p2", "p1"], [8, 7])  # the same ids whatever the order


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


def test_fingerprint_ignores_the_model_card_that_every_evaluation_rewrites(tmp_path):
    """Otherwise refreshing the card would make the next evaluation regenerate every tuned image."""
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.bin").write_bytes(b"abc")
    first = fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("---\nlibrary_name: diffusers\n---\n")
    assert fingerprint(tmp_path) == first
    (tmp_path / "unet" / "README.md").write_text("a file inside the weights is still part of them")
    assert fingerprint(tmp_path) != first


def test_model_specs_name_every_kind_of_weights(tmp_path):
    final = tmp_path / "train" / "sum" / "final"
    final.mkdir(parents=True)
    (final / "weights.json").write_text("{}")
    assert parse_tuned(str(final)) == TunedModel("sum", weights_dir=final)
    assert parse_tuned(f"static={final}").name == "static"
    pipeline_dir = tmp_path / "pipe"
    pipeline_dir.mkdir()
    (pipeline_dir / "model_index.json").write_text("{}")
    assert parse_tuned(f"p={pipeline_dir}") == TunedModel("p", pipeline_dir=pipeline_dir)
    # The layout of mhdang/dpo-sd1.5-text2image-v1: a unet/ folder and no pipeline around it.
    unet_only = tmp_path / "dpo-sd15"
    (unet_only / "unet").mkdir(parents=True)
    (unet_only / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    assert parse_tuned(str(unet_only)) == TunedModel("dpo-sd15", unet=str(unet_only))
    assert parse_tuned("dpo=unet:mhdang/dpo-sd1.5-text2image-v1") == TunedModel(
        "dpo", unet="mhdang/dpo-sd1.5-text2image-v1"
    )
    assert parse_tuned("unet:mhdang/dpo-sdxl-text2image-v1@main").revision == "main"
    assert parse_tuned("hub:stable-diffusion-v1-5/stable-diffusion-v1-5").hub_id == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert parse_tuned("original=base").is_base
    with pytest.raises(EvalError, match="exactly one"):
        TunedModel("x")
    with pytest.raises(EvalError, match="directory not found.*hub:<id>"):
        parse_tuned(str(tmp_path / "typo"))
    with pytest.raises(EvalError, match="none of weights.json"):
        parse_tuned(str(tmp_path / "train"))
    with pytest.raises(EvalError, match="neither a hub id"):
        parse_tuned("unet:not a repo")


def test_tags_identify_weights_and_what_they_apply_to(tmp_path):
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}"])
    assert tuned_tag(base_model(), cfg) == "base:tiny/sd15-pretrained"
    hub = parse_tuned("hub:org/model@v2")
    assert tuned_tag(hub, cfg) == "hub:org/model@v2"
    remote_unet = parse_tuned("unet:mhdang/dpo-sd1.5-text2image-v1")
    assert tuned_tag(remote_unet, cfg) == "unet:mhdang/dpo-sd1.5-text2image-v1@main+tiny/sd15-pretrained"
    # The same UNet applied to another base makes other images: another tag.
    other = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", "model.pretrained=tiny/sd15"])
    assert tuned_tag(remote_unet, other) != tuned_tag(remote_unet, cfg)


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
    original = pq.read_table(next(pairs_dir.glob("*.parquet")))
    before = original.to_pandas()
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

    # The same pairs in another row order and split into two files: the same pairs swap.
    reordered = tmp_path / "reordered"
    backwards = original.take(list(range(original.num_rows))[::-1])
    half = original.num_rows // 2
    write_parquet_atomic(backwards.slice(0, half), reordered / "part-0.parquet")
    write_parquet_atomic(backwards.slice(half), reordered / "part-1.parquet")
    assert shuffle_pair_labels(reordered, seed=0) == n
    again = pq.read_table(sorted(reordered.glob("*.parquet"))).to_pandas()
    assert set(
        again.pair_id[again.image_id_w != again.pair_id.map(before.set_index("pair_id").image_id_w)]
    ) == set(before.pair_id[swapped])
