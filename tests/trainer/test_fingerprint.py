"""The run's fingerprint (#16): which settings and data make another run, and how a change is reported."""

from __future__ import annotations

import pytest
from helpers.configs import train_config

from pipeline.config import derive_config
from trainer.fingerprint import (
    IGNORED_TRAIN_KEYS,
    FingerprintMismatchError,
    check_same_run,
    check_step,
    fingerprint_changes,
    training_fingerprint,
)

PAIRS = {"strategy": "majority", "rows": 24, "digest": "abc"}
CANDIDATES = {"image_settings": {"height": 64}, "files": 1, "files_digest": "def"}


def fingerprint(cfg, processes: int = 1, pairs=PAIRS, candidates=CANDIDATES):
    return training_fingerprint(cfg, processes, pairs, candidates)


@pytest.fixture
def cfg(tmp_path):
    return train_config(tmp_path)


@pytest.mark.parametrize(
    "override",
    [
        "train.resume=never",
        "train.log_every=7",
        "train.tracker=tensorboard",
        "train.keep_checkpoints=9",
        "train.checkpoint_every=3",
        "train.max_steps=400",  # the constant schedule does not depend on it
    ],
)
def test_what_cannot_change_the_weights_is_not_in_it(cfg, override):
    assert fingerprint(derive_config(cfg, [override])) == fingerprint(cfg)


@pytest.mark.parametrize(
    ("override", "change"),
    [
        ("train.beta=2000", "train.beta: 500.0 → 2000.0"),
        ("train.ref_update.mode=ema", "train.ref_update.mode: 'none' → 'ema'"),
        ("train.batch_size=2", "train.batch_size: 4 → 2"),
        ("train.seed=1", "train.seed: 0 → 1"),
        ("model.pretrained=tiny/sd21", "model.pretrained: 'tiny/sd15' → 'tiny/sd21'"),
    ],
)
def test_a_setting_that_changes_the_weights_is_named(cfg, override, change):
    assert fingerprint_changes(fingerprint(cfg), fingerprint(derive_config(cfg, [override]))) == [change]


def test_max_steps_counts_when_the_schedule_depends_on_it(cfg):
    cosine = derive_config(cfg, ["train.lr_scheduler=cosine"])
    assert fingerprint_changes(
        fingerprint(cosine), fingerprint(derive_config(cosine, ["train.max_steps=8"]))
    ) == ["train.max_steps: 4 → 8"]
    check_step(4, 8, "checkpoint x")  # a constant schedule may continue a shorter run
    with pytest.raises(FingerprintMismatchError, match="at step 8, beyond train.max_steps=4"):
        check_step(8, 4, "checkpoint x")


def test_data_and_processes_are_in_it(cfg):
    old = fingerprint(cfg)
    assert fingerprint_changes(old, fingerprint(cfg, pairs={**PAIRS, "rows": 20, "digest": "x"})) == [
        "pairs.digest: 'abc' → 'x'",
        "pairs.rows: 24 → 20",
    ]
    assert fingerprint_changes(old, fingerprint(cfg, candidates={**CANDIDATES, "files_digest": "y"})) == [
        "candidates.files_digest: 'def' → 'y'"
    ]
    assert fingerprint_changes(old, fingerprint(cfg, processes=2)) == ["num_processes: 1 → 2"]


def test_the_training_size_counts_only_when_the_trainer_encodes_images(cfg):
    """Imported images are brought to generation.height × width by the trainer; stored latents are used as is."""
    smaller = derive_config(cfg, ["generation.height=32", "generation.width=32"])
    assert fingerprint_changes(fingerprint(cfg), fingerprint(smaller)) == []
    encoded = training_fingerprint(cfg, 1, PAIRS, CANDIDATES, encodes_images=True)
    assert fingerprint_changes(
        encoded, training_fingerprint(smaller, 1, PAIRS, CANDIDATES, encodes_images=True)
    ) == ["encoded_image_size: [64, 64] → [32, 32]"]


def test_the_refusal_names_every_change_and_how_to_start_fresh(cfg):
    new = fingerprint(derive_config(cfg, ["train.beta=2000", "train.ref_update.mode=ema"]))
    with pytest.raises(FingerprintMismatchError) as err:
        check_same_run(fingerprint(cfg), new, "checkpoint runs/x/checkpoint-0000004")
    message = str(err.value)
    assert "train.beta: 500.0 → 2000.0" in message and "train.ref_update.mode: 'none' → 'ema'" in message
    assert "run.output_dir" in message and "--set train.resume=never" in message
    check_same_run(fingerprint(cfg), fingerprint(cfg), "the same run")  # no error


def test_every_ignored_key_is_a_train_key(cfg):
    assert set(IGNORED_TRAIN_KEYS) <= set(cfg.train.model_dump())
