"""Evaluation end to end through stage 1 on local Ray: a UNet-only checkpoint against the base on two prompt sets
(one with two styles), a held-out metric, then the same pair head to head the other way round from the cache,
and a cache of other generation settings refused.

It runs in a child process, as the job test does: an in-process local Ray must not be shared with the stage-1
tests that connect this pytest process to their own `ray start` cluster.
"""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import polars as pl
import pytest
import torch
from helpers.configs import FUSED, run_config
from helpers.stage1_scorers import make_scorer, pickle_by_value

from pipeline.config import ModelSection
from pipeline.evaluation import ProtocolMismatch, base_model, evaluate
from pipeline.evaluation.protocol import read_parquet_protocol
from pipeline.models.diffusion import load_pipeline

pytestmark = pytest.mark.ray

SMALL = [
    "model.pretrained=tiny/sd15",
    "generation.num_inference_steps=3",
    "generation.height=32",
    "generation.width=32",
    "generation.batch_size=4",
    FUSED,
    "scoring.scorers=[{name: brightness, batch_size: 8}]",  # the training vote's only metric
    "eval.scorers=[{name: brightness, batch_size: 8}, {name: redness, batch_size: 8}]",
    "eval.seeds_per_prompt=2",
    "eval.bootstrap_samples=200",
]


def test_any_model_against_any_on_several_prompt_sets_reusing_images(tmp_path):
    child = multiprocessing.get_context("spawn").Process(target=_evaluations, args=(tmp_path,))
    child.start()
    child.join(timeout=600)
    assert child.exitcode == 0, (
        "an evaluation or one of its checks failed in the child process (traceback above)"
    )


def _prompt_sets(tmp_path) -> list[str]:
    (tmp_path / "parti.txt").write_text("a red circle\na blue square\n")
    (tmp_path / "anime.json").write_text(json.dumps(["a red circle"]))  # also in the first set
    (tmp_path / "photo.json").write_text(json.dumps(["a green cone"]))
    manifest = tmp_path / "styles.yaml"
    manifest.write_text(f"name: styles\nsource: [{tmp_path}/anime.json, {tmp_path}/photo.json]\n")
    return [f"eval.prompt_sets={{parti: {{path: {tmp_path}/parti.txt}}, hpd: {{manifest: {manifest}}}}}"]


def _evaluations(tmp_path):
    pickle_by_value()
    cfg = run_config(tmp_path / "run", *SMALL, *_prompt_sets(tmp_path))
    unet = load_pipeline(ModelSection(pretrained="tiny/sd15"), device="cpu").unet
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(1.05)
    unet.save_pretrained(tmp_path / "dpo" / "unet", safe_serialization=True)  # the mhdang/dpo-* layout
    cache = tmp_path / "images"

    first = evaluate(
        cfg, [f"dpo={tmp_path / 'dpo'}"], out_dir=tmp_path / "vs_base", cache_dir=cache,
        scorer_factory=make_scorer, progress=False,
    )  # fmt: skip
    # 3 distinct prompts (one shared by both sets) × 2 seeds: each model generated 6 images, none reused.
    assert {k: (r.planned, r.reused, r.generated) for k, r in first.reuse.items()} == {
        "base": (6, 0, 6),
        "dpo": (6, 0, 6),
    }
    frame = first.frame
    groups = {g: n for g, n in frame.select("prompt_set", "n").unique().iter_rows()}
    assert groups == {"parti": 4, "hpd": 4, "hpd/anime": 2, "hpd/photo": 2, "pooled": 6}
    held = frame.filter(pl.col("held_out"))["metric"].unique().to_list()
    assert held == ["redness"]
    stats = frame.filter(pl.col("prompt_set") == "pooled")["metric"].to_list()
    assert stats == ["brightness", "redness", "average", "worst_metric", "majority", "won_all", "lost_all"]
    assert frame.filter(pl.col("prompt_set") == "pooled")["n_clusters"].unique().to_list() == [3]  # prompts
    text = first.markdown.read_text()
    assert "redness (held out)" in text and "## hpd/anime" in text and "Protocol: sampler `default`" in text
    protocol = read_parquet_protocol(first.table)
    assert (
        protocol
        == json.loads(first.manifest.read_text())["protocol"]
        == read_parquet_protocol(first.per_image)
    )
    assert protocol["held_out_metrics"] == ["redness"] and protocol["num_inference_steps"] == 3

    # The other way round, from the cache: nothing generated, Ray not even needed, and every item mirrored.
    second = evaluate(
        cfg, [base_model("original")], baseline=f"dpo={tmp_path / 'dpo'}", out_dir=tmp_path / "vs_dpo",
        cache_dir=cache, scorer_factory=make_scorer, progress=False,
    )  # fmt: skip
    assert {k: (r.reused, r.generated) for k, r in second.reuse.items()} == {
        "dpo": (6, 0),
        "original": (6, 0),
    }
    a = pl.read_parquet(first.per_image).sort("prompt_id", "seed")
    b = pl.read_parquet(second.per_image).sort("prompt_id", "seed")
    assert a["image_id_model"].to_list() == b["image_id_baseline"].to_list()
    for col in ("win_brightness", "win_redness", "win_majority"):
        np.testing.assert_array_equal(a[col].to_numpy(), 1.0 - b[col].to_numpy())
    np.testing.assert_array_equal(a["won_all"].to_numpy(), b["lost_all"].to_numpy())
    key = ["prompt_set", "metric"]
    ab = first.frame.select(*key, "win_rate").join(
        second.frame.select(*key, "win_rate"), on=key, suffix="_ba"
    )
    mirrored = ab.filter(~pl.col("metric").is_in(["worst_metric", "won_all", "lost_all"]))
    np.testing.assert_allclose(mirrored["win_rate"].to_numpy(), 1.0 - mirrored["win_rate_ba"].to_numpy())

    # Images made with other settings are never mixed into the cache.
    other = run_config(tmp_path / "run", *SMALL, *_prompt_sets(tmp_path), "generation.num_inference_steps=4")
    try:
        evaluate(other, [f"dpo={tmp_path / 'dpo'}"], out_dir=tmp_path / "steps4", cache_dir=cache,
                 scorer_factory=make_scorer, progress=False)  # fmt: skip
    except ProtocolMismatch as exc:
        assert "num_inference_steps: 3 vs 4" in str(exc)
    else:
        raise AssertionError("a cache of 3-step images was reused for a 4-step evaluation")
