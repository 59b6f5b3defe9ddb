"""What the full-size configs take from the reference Diffusion-DPO trainer, end to end on tiny models: the scaled
learning rate, prompt dropout, and the human-label baseline trained on an imported dataset of many image sizes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import train_config
from helpers.relabel import relabel_run
from safetensors.torch import load_file

from pipeline.io import read_manifest
from pipeline.models.zoo import resolve_pretrained
from pipeline.testing.pickapic import PICKAPIC_LIKE_FACTS
from pipeline.testing.toy_run import copy_toy_run
from trainer.recipe import train
from trainer.sampling import step_prompt_dropout

pytestmark = pytest.mark.train


def final_weights(out) -> dict[str, torch.Tensor]:
    return load_file(out.checkpoints_dir / f"checkpoint-{out.step:07d}" / "model.safetensors")


def test_scale_lr_trains_exactly_as_the_scaled_rate_and_reports_it(tmp_path, caplog):
    """lr 1e-5 with scale_lr over batch 2 × accumulation 2 is lr 4e-5: the same bits as giving 4e-5 directly."""
    keys = {
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_steps": 2,
        "eval_pairs": 0,
        "log_every": 1,
    }
    caplog.set_level(logging.INFO, logger="trainer")
    scaled = train(train_config(copy_toy_run(tmp_path / "scaled"), scale_lr=True, learning_rate=1e-5, **keys))
    first = next(r.getMessage() for r in caplog.records if r.name == "trainer")
    assert first.startswith(
        "effective batch 4 = 2 pair(s) × 2 accumulation × 1 process(es); learning rate 4e-05"
    )
    manifest = json.loads(scaled.manifest.read_text())
    assert manifest["effective_batch"] == 4 and manifest["scale_lr"] is True
    assert manifest["effective_learning_rate"] == pytest.approx(4e-5, rel=1e-12)
    assert scaled.metrics["lr"] == pytest.approx(4e-5, rel=1e-12)  # what the optimizer used
    direct = train(train_config(copy_toy_run(tmp_path / "direct"), learning_rate=4e-5, **keys))
    a, b = final_weights(scaled), final_weights(direct)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prompt_dropout_is_applied_at_its_rate_and_counted(tmp_path):
    keys = {"batch_size": 4, "max_steps": 3, "eval_pairs": 0, "seed": 2}
    out = train(train_config(copy_toy_run(tmp_path / "drop"), prompt_dropout=0.5, **keys))
    counted = json.loads(out.manifest.read_text())["prompt_dropout"]
    expected = int(sum(step_prompt_dropout(s, 4, 2, 0.5).sum() for s in range(3)))
    assert counted == {"rate": 0.5, "prompts": 12, "empty": expected, "share": expected / 12}
    assert 0 < expected < 12
    plain = train(train_config(copy_toy_run(tmp_path / "plain"), **keys))
    assert json.loads(plain.manifest.read_text())["prompt_dropout"]["empty"] == 0
    a, b = final_weights(out), final_weights(plain)
    assert any(not torch.equal(a[k], b[k]) for k in a), "the empty prompts changed the training"


def test_human_baseline_is_one_command_each_on_an_imported_dataset(tmp_path, capsys):
    """`vote --strategy human`, then `train --set train.strategy=human`, on Pick-a-Pic-like images of 4 sizes."""
    from pipeline.vote import main as vote_main
    from trainer.train import main as train_main

    cfg = relabel_run(
        tmp_path,
        "generation.height=32",
        "generation.width=32",
        "train={use_lora: false, max_steps: 2, batch_size: 2, eval_pairs: 4, tracker: none, prompt_dropout: 0.2}",
    )
    config = tmp_path / "relabel.yaml"
    config.write_text(cfg.to_yaml())
    assert vote_main(["--config", str(config), "--strategy", "human"]) == 0
    assert train_main(["--config", str(config), "--set", "train.strategy=human"]) == 0
    assert "final weights" in capsys.readouterr().out
    manifest = read_manifest(cfg.output_dir / "train" / "human")
    assert manifest["status"] == "finished" and manifest["config"]["train"]["strategy"] == "human"
    assert manifest["num_pairs"] == PICKAPIC_LIKE_FACTS["human_pairs_kept"]
    assert manifest["num_vae_encoded"] == manifest["num_images"] > 0
    vae = json.loads((Path(resolve_pretrained("tiny/sd15")) / "vae" / "config.json").read_text())
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    assert manifest["latent_shape"] == [4, 32 // factor, 32 // factor]  # the run's 32×32, from 4 image sizes
    assert np.isfinite(manifest["train_metrics"]["loss"])
