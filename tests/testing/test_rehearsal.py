"""Every shipped full-size config, rehearsed on the CPU as shipped except for `rehearsal_overrides`: prompts →
stage 1 → vote → training steps, with the checks a real run's first hour would otherwise be spent finding out."""

from __future__ import annotations

import io
import math

import pytest
from helpers.configs import ROOT

from pipeline.config import load_config
from pipeline.testing.rehearsal import rehearsal_config, rehearsal_overrides, run_rehearsal
from trainer.sampling import step_prompt_dropout
from trainer.scaling import effective_batch, effective_learning_rate

pytestmark = [pytest.mark.ray, pytest.mark.train]

# SD1.5 in `make test`; SD2.1 and SDXL, the same path with their own shipped settings, in `make test-e2e`.
FULL_SIZE = ("sd15", pytest.param("sd21", marks=pytest.mark.e2e), pytest.param("sdxl", marks=pytest.mark.e2e))
# An AdamW or Adafactor step moves each weight by about the learning rate (Adam's first step by exactly ±lr where
# the gradient is not zero; Adafactor's update is clipped to an RMS of 1). Two steps therefore move the weights by
# an RMS between these multiples of the rate; a rate left unscaled (÷ the effective batch of 8) falls far below.
RMS_PER_RATE = (0.3, 2.5)


def test_the_override_list_is_printed_and_is_all_that_differs(tmp_path):
    out = io.StringIO()
    path = ROOT / "configs" / "sdxl.yaml"
    rehearsed = rehearsal_config(path, tmp_path / "run", out)
    shipped = load_config(path)
    printed = out.getvalue().splitlines()
    changes = rehearsal_overrides(shipped, tmp_path / "run")
    assert printed[0].startswith(f"rehearsal of {path}: {len(changes)} overrides")
    assert [line.split("    # ")[0].strip() for line in printed[1:]] == [f"--set {o}" for o, _ in changes]
    changed_keys = {o.split("=", 1)[0] for o, _ in changes}
    for section in ("vote", "train"):
        before = getattr(shipped, section).model_dump()
        after = getattr(rehearsed, section).model_dump()
        differ = {k for k in before if before[k] != after[k]}
        assert {f"{section}.{k}" for k in differ} <= changed_keys | {"train.ref_update"}, differ
    assert rehearsed.train.ref_update.mode == shipped.train.ref_update.mode


@pytest.mark.parametrize("name", FULL_SIZE)
def test_shipped_config_rehearses_end_to_end(tmp_path, name):
    shipped = load_config(ROOT / "configs" / f"{name}.yaml")
    report = run_rehearsal(ROOT / "configs" / f"{name}.yaml", tmp_path / name, out=None)
    cfg, manifest = report.cfg, report.train_manifest

    assert report.images == 3 * 3 and report.latents_finite and report.images_finite
    assert report.pairs_kept > 0 and report.pairs_formed == 3 * 3  # C(3, 2) pairs in each of 3 prompts
    assert manifest["status"] == "finished" and manifest["step"] == cfg.train.max_steps

    # The learning rate and batch the optimizer got are the config's rule: lr × batch × accumulation × processes.
    assert manifest["scale_lr"] is shipped.train.scale_lr is True
    assert manifest["effective_batch"] == effective_batch(cfg.train, 1) == 8
    assert manifest["effective_learning_rate"] == pytest.approx(
        effective_learning_rate(cfg.train, 1), rel=1e-12
    )
    assert manifest["effective_learning_rate"] == pytest.approx(shipped.train.learning_rate * 8, rel=1e-12)

    # The weights moved by what that rate implies.
    rms = report.weight_change["rms"]
    low, high = RMS_PER_RATE
    assert low * manifest["effective_learning_rate"] <= rms <= high * manifest["effective_learning_rate"], rms
    assert report.weight_change["relative"] > 0

    # Prompt dropout at the configured rate: exactly the seeded draws of the pair stream were trained empty.
    dropout = manifest["prompt_dropout"]
    micro_steps = cfg.train.max_steps * cfg.train.gradient_accumulation_steps
    drawn = sum(
        int(step_prompt_dropout(s, cfg.train.batch_size, cfg.train.seed, shipped.train.prompt_dropout).sum())
        for s in range(micro_steps)
    )
    assert dropout["rate"] == shipped.train.prompt_dropout == 0.2
    assert dropout["prompts"] == micro_steps and dropout["empty"] == drawn > 0

    # The noise schedule's target: v for SD2.1, ε for SD1.5 and SDXL.
    assert manifest["prediction_type"] == ("v_prediction" if name == "sd21" else "epsilon")
    assert math.isfinite(manifest["train_metrics"]["loss"])
    assert manifest["reference_refreshes"] == [cfg.train.max_steps]
