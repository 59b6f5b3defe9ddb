"""What a training run leaves for people: `logs/metrics.jsonl`, the report's curves."""

from __future__ import annotations

import json

import pytest
from helpers.configs import train_config

from pipeline.testing.toy_run import copy_toy_run
from trainer.metrics_log import METRICS_FILE, read_metrics
from trainer.recipe import train

pytestmark = pytest.mark.train


def test_training_logs_every_window_to_jsonl(tmp_path):
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
