"""What a training run leaves for people: `logs/metrics.jsonl` (the report's curves) and the model card in `final/`."""

from __future__ import annotations

import json

import pytest
from helpers.configs import train_config

from pipeline.reporting.model_card import read_front_matter
from pipeline.testing.toy_run import copy_toy_run
from trainer.metrics_log import METRICS_FILE, read_metrics
from trainer.recipe import train

pytestmark = pytest.mark.train


def test_training_logs_every_window_to_jsonl_and_writes_a_model_card(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(run, max_steps=5, batch_size=4, log_every=2, tracker="none", eval_pairs=8,
                       use_lora=True, ref_update={"mode": "hard", "every": 2})  # fmt: skip
    out = train(cfg)

    curves = read_metrics(out.logs_dir / METRICS_FILE)
    assert set(curves) >= {
        "loss",
        "implicit_acc",
        "reward_margin",
        "winner_worse",
        "policy_mse_w",
        "ref_mse_w",
        "lr",
    }
    assert [s for s, _ in curves["loss"]] == [2, 4, 5]  # every log_every steps, and the last step
    manifest = json.loads(out.manifest.read_text())
    assert {k: v[-1][1] for k, v in curves.items()} == pytest.approx(manifest["train_metrics"])

    card = (out.final_dir / "README.md").read_text()
    meta = read_front_matter(card)
    assert meta["library_name"] == "diffusers" and "lora" in meta["tags"]
    assert "base_model" not in meta  # tiny/sd15 is not a hub model
    assert "pipe.load_lora_weights(" in card and "steps 2, 4" in card and "24 over 4 prompts" in card
