"""The protocol travels with the numbers: recorded, compared, and a mismatch refused naming what differs."""

from __future__ import annotations

import json

import pytest
from helpers.configs import TINY_YAML, run_config

from pipeline.evaluation import ProtocolMismatch
from pipeline.evaluation import protocol as proto
from pipeline.evaluation.compare import check_eval_dir
from pipeline.evaluation.prompt_sets import load_eval_prompt_sets


def tiny_eval_config(run_dir, *overrides):
    return run_config(run_dir, *overrides, base=TINY_YAML)


def _protocol(cfg):
    sets = load_eval_prompt_sets(cfg.eval.named_prompt_sets())
    return proto.evaluation_protocol(cfg, sets.sets, cfg.scoring.scorers)


def test_the_protocol_names_every_setting_that_moves_a_win_rate(tmp_path):
    p = _protocol(tiny_eval_config(tmp_path))
    assert {k: p[k] for k in proto.IMAGE_KEYS} == {
        "sampler": "default",
        "num_inference_steps": 10,
        "guidance_scale": 5.0,
        "height": 64,
        "width": 64,
        "dtype": "float32",
    }
    assert p["seeds"] == {"per_prompt": 4, "offset": 1_000_000, "scheme": "per_prompt"}
    assert p["prompt_sets"]["tiny_eval"]["n_prompts"] == 16
    assert p["metrics"][0] == "hpsv21 (tiny)"
    assert p["bootstrap"]["unit"] == "prompt"


def test_a_different_protocol_is_refused_naming_each_difference(tmp_path):
    a = _protocol(tiny_eval_config(tmp_path))
    b = _protocol(tiny_eval_config(tmp_path, "generation.guidance_scale=7.5", "eval.prompts.limit=4"))
    diff = proto.differences(a, b)
    assert diff[0] == "guidance_scale: 5.0 vs 7.5"
    assert any(d.startswith("prompt_sets.tiny_eval.n_prompts: 16 vs 4") for d in diff)
    assert any(d.startswith("prompt_sets.tiny_eval.version:") for d in diff)  # other prompts, other version
    with pytest.raises(ProtocolMismatch, match=r"guidance_scale: 5\.0 vs 7\.5.*n_prompts: 16 vs 4"):
        proto.check_same(a, b, "two evaluations")
    proto.check_same(a, dict(a), "the same evaluation twice")


def test_an_eval_directory_of_another_protocol_is_not_overwritten(tmp_path):
    a = _protocol(tiny_eval_config(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"protocol": a}))
    check_eval_dir(tmp_path, a)
    b = _protocol(tiny_eval_config(tmp_path, "eval.seeds_per_prompt=8"))
    with pytest.raises(ProtocolMismatch, match=r"already holds an evaluation.*seeds.per_prompt: 4 vs 8"):
        check_eval_dir(tmp_path, b)


def test_images_cached_under_other_generation_settings_are_refused(tmp_path):
    cached = tiny_eval_config(tmp_path, "generation.num_inference_steps=20", "generation.scheduler=ddim")
    manifest = tmp_path / "candidates" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"config": cached.model_dump(mode="json")}))
    proto.check_image_cache(cached, manifest)  # the same settings: fine
    # More seeds or other prompts are other images: fine too. Other steps or sampler are not.
    proto.check_image_cache(
        tiny_eval_config(
            tmp_path,
            "generation.num_inference_steps=20",
            "generation.scheduler=ddim",
            "eval.seeds_per_prompt=9",
        ),
        manifest,
    )
    with pytest.raises(
        ProtocolMismatch, match=r"num_inference_steps: 20 vs 10; sampler: 'ddim' vs 'default'"
    ):
        proto.check_image_cache(tiny_eval_config(tmp_path), manifest)


def test_a_parquet_file_without_a_protocol_is_named(tmp_path):
    import polars as pl

    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "old.parquet")
    with pytest.raises(ProtocolMismatch, match="old.parquet: no protocol"):
        proto.read_parquet_protocol(tmp_path / "old.parquet")


def test_the_summary_line_says_how_the_seeds_were_drawn():
    from pipeline.evaluation.protocol import seeds_phrase

    assert seeds_phrase({"per_prompt": 4, "offset": 10, "scheme": "per_prompt"}) == (
        "4 seeds per prompt, each its own noise (noise_seed(prompt, 10 + k), k < 4)"
    )
    shared = "seeds 10 + k for k < 4 per prompt (the same for every prompt)"
    assert seeds_phrase({"per_prompt": 4, "offset": 10, "scheme": "shared"}) == shared
    assert seeds_phrase({"per_prompt": 4, "offset": 10}) == shared  # written before the scheme was recorded
