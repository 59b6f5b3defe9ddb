"""The model card: hub front matter that parses back as YAML, and the training / evaluation facts of the run."""

from __future__ import annotations

import json

import pytest

from pipeline.io import write_manifest
from pipeline.reporting.model_card import (
    CardEvaluation,
    CardFacts,
    card_front_matter,
    hub_base_model,
    read_front_matter,
    render_model_card,
    write_model_card,
)


def facts(**changes) -> CardFacts:
    base = {
        "kind": "lora",
        "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "family": "sd15",
        "strategy": "majority",
        "metrics": ["hpsv21", "clip", "pickscore"],
        "config": {
            "train": {
                "beta": 500.0,
                "use_lora": True,
                "lora_rank": 8,
                "ref_update": {"mode": "hard", "every": 50},
            },
            "vote": {"pairing": "all"},
            "generation": {"num_candidates": 8, "width": 512, "height": 512},
        },
        "step": 300,
        "num_pairs": 4321,
        "num_prompts": 24,
        "num_images": 192,
        "global_batch": 16,
        "refreshes": [50, 100, 150],
        "vote_counts": {"pairs_kept": 4321, "pairs_formed": 5000, "min_agree": 2},
        "prompt_set": "pickapic_v2_captions",
    }
    return CardFacts(**(base | changes))


def test_front_matter_of_a_lora_parses_back_with_the_hub_keys():
    card = render_model_card(facts())
    meta = read_front_matter(card)
    assert meta["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert {"lora", "text-to-image", "diffusers", "stable-diffusion", "diffusion-dpo", "balanced-dpo"} <= set(
        meta["tags"]
    )
    assert meta == card_front_matter(facts())
    body = card.split("\n---\n", 1)[1]
    assert "pipe.load_lora_weights(" in body
    for fact in (
        "`majority`",
        "hpsv21, clip, pickscore",
        "500.0",
        "every 50 steps",
        "4,321 / 5,000",
        "steps 50, 100, 150",
    ):
        assert fact in body, fact
    assert "Not evaluated yet" in body


def test_full_finetunes_and_pipelines_are_finetunes_without_the_lora_tag():
    for kind, loader in (
        ("unet", 'subfolder="unet"'),
        ("pipeline", 'DiffusionPipeline.from_pretrained("THIS'),
    ):
        card = render_model_card(
            facts(kind=kind, family="sdxl", base_model="stabilityai/stable-diffusion-xl-base-1.0")
        )
        meta = read_front_matter(card)
        assert meta["base_model_relation"] == "finetune"
        assert "lora" not in meta["tags"] and "stable-diffusion-xl" in meta["tags"]
        assert loader in card


def test_a_base_that_is_not_on_the_hub_gets_no_base_model_key(tmp_path):
    assert hub_base_model("tiny/sd15") is None
    assert hub_base_model(str(tmp_path)) is None
    assert hub_base_model("runs/round_0/policy") is None  # a relative path with two parts is not an id
    assert (
        hub_base_model("stabilityai/stable-diffusion-xl-base-1.0")
        == "stabilityai/stable-diffusion-xl-base-1.0"
    )
    meta = read_front_matter(render_model_card(facts(base_model="tiny/sd15")))
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert meta["library_name"] == "diffusers"


def test_the_evaluation_table_is_in_the_card_when_given():
    rows = [
        {"run": "majority", "metric": "clip", "win_rate": 0.625, "ci_low": 0.5, "ci_high": 0.75, "n": 64},
        {"run": "majority", "metric": "majority", "win_rate": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 64},
    ]
    ev = CardEvaluation(
        "majority", rows, "the base model `x/y`", "`data_manifests/tiny_eval.yaml`", 4, 0.95, 1000
    )
    card = render_model_card(facts(evaluation=ev))
    assert "| clip | 0.625 | [0.500, 0.750] | 64 |" in card
    assert "| majority | 0.700 | [0.600, 0.800] | 64 |" in card
    assert "Not evaluated yet" not in card


def test_write_model_card_reads_the_run_files(tmp_path):
    run = tmp_path / "run"
    train_dir = run / "train" / "majority"
    final = train_dir / "final"
    final.mkdir(parents=True)
    (final / "weights.json").write_text(
        json.dumps({"kind": "unet", "base_model": "tiny/sd15", "family": "sd15", "step": 4})
    )
    config = {
        "model": {"pretrained": "tiny/sd15"},
        "train": {"strategy": "majority", "beta": 500.0, "ref_update": {"mode": "none"}},
    }
    write_manifest(train_dir, config=config, family="sd15", num_pairs=24, num_prompts=4, num_images=16, step=4,
                   global_batch=4, reference_refreshes=[], eval_before={"implicit_acc": 0.5}, eval_after={"implicit_acc": 0.75})  # fmt: skip
    write_manifest(
        run / "pairs" / "majority",
        metrics=["brightness"],
        min_agree=1,
        counts={"pairs_kept": 24, "pairs_formed": 30},
    )
    card_path = write_model_card(final, train_dir)
    card = card_path.read_text()
    meta = read_front_matter(card)
    assert card_path == final / "README.md" and "base_model" not in meta and "lora" not in meta["tags"]
    assert (
        "static (the initial model" in card
        and "24 over 4 prompts (16 images)" in card
        and "| after | 0.750 |" in card
    )
    assert "24 / 30" in card


def test_missing_training_manifest_and_unknown_kinds_are_errors_naming_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training manifest"):
        write_model_card(tmp_path, tmp_path)
    write_manifest(tmp_path, config={})
    with pytest.raises(ValueError, match="unknown kind"):
        write_model_card(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="front matter"):
        read_front_matter("# no front matter\n")
