"""The effective batch and learning rate: the reference's --scale_lr rule, and the shipped configs' intent."""

from __future__ import annotations

import pytest
from helpers.configs import ROOT

from pipeline.config import TrainSection, load_config
from trainer.scaling import describe_scaling, effective_batch, effective_learning_rate


def test_scale_lr_multiplies_by_batch_accumulation_and_processes():
    tcfg = TrainSection(learning_rate=1e-8, scale_lr=True, batch_size=2, gradient_accumulation_steps=3)
    assert effective_batch(tcfg, 4) == 24
    assert effective_learning_rate(tcfg, 4) == pytest.approx(24e-8, rel=1e-12)
    unscaled = tcfg.model_copy(update={"scale_lr": False})
    assert effective_learning_rate(unscaled, 4) == 1e-8
    assert describe_scaling(tcfg, 4).startswith(
        "effective batch 24 = 2 pair(s) × 3 accumulation × 4 process(es)"
    )


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_shipped_configs_reach_the_papers_learning_rate_on_16_processes(name):
    """launchers/sd15.sh and sdxl.sh: --learning_rate=1e-8 --scale_lr, batch 1 × 128, the paper's 2048 (16 GPUs)."""
    tcfg = load_config(ROOT / "configs" / f"{name}.yaml").train
    assert effective_batch(tcfg, 16) == 2048
    assert effective_learning_rate(tcfg, 16) == pytest.approx(2.048e-5, rel=1e-12)
