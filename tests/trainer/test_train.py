"""The trainer end to end on tiny models: learning, dynamic reference, LoRA / full export, features, failures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.configs import ROOT, train_config
from helpers.numerics import assert_close_at_scale
from safetensors.torch import load_file

from pipeline.config import GenerationSection, ModelSection
from pipeline.models.diffusion import generate, load_pipeline
from pipeline.testing.toy_run import copy_toy_run
from trainer.export import final_weights_dir, load_tuned_pipeline
from trainer.recipe import NonFiniteLossError, train

pytestmark = pytest.mark.train

GEN = GenerationSection(height=64, width=64, num_inference_steps=3, guidance_scale=5.0)


def checkpoint_weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


# Runs that differ only in float summation order (micro-batches, processes) must make the same update up to
# this relative error: ‖Δa − Δb‖ / ‖Δa‖ over all UNet weights, Δ = trained − base. Adam divides by √v, so a
# rounding difference in a near-zero gradient moves a weight by up to 2·lr: exact equality is not expected.
UPDATE_TOLERANCE = 0.02


def update_mismatch(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], family: str = "sd15") -> float:
    base = load_pipeline(ModelSection(pretrained=f"tiny/{family}"), device="cpu").unet.state_dict()
    da = torch.cat([(a[k] - base[k]).flatten() for k in base])
    db = torch.cat([(b[k] - base[k]).flatten() for k in base])
    return float((da - db).norm() / da.norm())


def test_eval_after_is_measured_before_a_refresh_on_the_last_step(tmp_path):
    """With the dynamic reference refreshed at the final step, eval_after still compares the policy with the
    reference it trained against (after the refresh they are equal and the accuracy would read 0.5)."""
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(run, max_steps=10, batch_size=8, ref_update={"mode": "hard", "every": 5})
    out = train(cfg)
    assert out.refreshes == [5, 10]
    assert out.eval_after["implicit_acc"] != 0.5 and out.eval_after["reward_margin"] != 0.0
    assert json.loads(out.manifest.read_text())["eval_after"] == out.eval_after


def test_short_full_finetune_learns_its_pairs_and_exports_a_unet(tmp_path):
    """Implicit accuracy on the training pairs rises above 0.5; the UNet export loads into a pipeline."""
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(run, max_steps=10, batch_size=8, checkpoint_every=5, tracker="tensorboard")
    out = train(cfg)
    assert out.step == 10 and out.refreshes == []
    assert out.eval_before["implicit_acc"] == 0.5  # policy == reference before the first step
    assert out.eval_after["implicit_acc"] > 0.5
    assert out.eval_after["loss"] < math.log(2)
    manifest = json.loads(out.manifest.read_text())
    assert manifest["status"] == "finished" and manifest["num_pairs"] == 24
    assert manifest["final_weights"] == str(out.final_dir)
    assert list(out.logs_dir.rglob("events.out.tfevents.*")), "tensorboard logs are written"
    assert sorted(p.name for p in out.checkpoints_dir.iterdir()) == [
        "checkpoint-0000005",
        "checkpoint-0000010",
    ]

    # mode none: the reference saved with the checkpoint is still the base UNet.
    base = load_pipeline(ModelSection(pretrained="tiny/sd15"), device="cpu")
    ref_state = load_file(out.last_checkpoint / "reference.safetensors")
    base_state = base.unet.state_dict()
    assert all(torch.equal(ref_state[f"unet.{k}"], v) for k, v in base_state.items())

    assert final_weights_dir(run, "majority") == out.final_dir
    tuned = load_tuned_pipeline(cfg.model, out.final_dir, device="cpu")
    trained = checkpoint_weights(out.last_checkpoint)
    assert all(torch.equal(tuned.unet.state_dict()[k], trained[k]) for k in trained)
    a = generate(base, ["a green square"], [0], GEN)
    b = generate(tuned, ["a green square"], [0], GEN)
    assert a.latents.shape == b.latents.shape == (1, 4, 16, 16)
    assert not (a.latents == b.latents).all(), "the tuned UNet generates differently"


def test_lora_v_prediction_with_hard_refresh_exports_loadable_lora(tmp_path):
    """SD2.1 (v-prediction): the reference adapter becomes a copy of the policy adapter at each refresh."""
    run = copy_toy_run(tmp_path / "run", family="sd21")
    cfg = train_config(
        run,
        family="sd21",
        use_lora=True,
        lora_rank=4,
        learning_rate=1e-3,
        ref_update={"mode": "hard", "every": 3},
        max_steps=4,
        checkpoint_every=3,
    )
    out = train(cfg)
    assert out.refreshes == [3]
    assert json.loads(out.manifest.read_text())["reference_refreshes"] == [3]
    at_refresh = checkpoint_weights(out.checkpoints_dir / "checkpoint-0000003")
    at_end = checkpoint_weights(out.checkpoints_dir / "checkpoint-0000004")
    ref_keys = [k for k in at_refresh if ".reference." in k]
    assert ref_keys
    for k in ref_keys:
        policy_key = k.replace(".reference.", ".policy.")
        assert torch.equal(at_refresh[k], at_refresh[policy_key])  # hard copy at step 3
        assert torch.equal(at_end[k], at_refresh[k])  # frozen in between refreshes
    assert any(not torch.equal(at_end[k.replace(".reference.", ".policy.")], at_end[k]) for k in ref_keys)

    # The LoRA loads with the stock diffusers call, and changes what the pipeline generates.
    pipe = load_pipeline(cfg.model, device="cpu")
    base = generate(pipe, ["a green square"], [1], GEN)
    pipe.load_lora_weights(out.final_dir)
    tuned = generate(pipe, ["a green square"], [1], GEN)
    assert not (base.latents == tuned.latents).all()
    via_api = generate(
        load_tuned_pipeline(cfg.model, out.final_dir, device="cpu"), ["a green square"], [1], GEN
    )
    assert_close_at_scale(via_api.latents, tuned.latents)  # two pipelines, same weights


def test_sdxl_lora_ema_reference(tmp_path):
    """SDXL (two encoders, pooled embeds, time ids): ref ← decay·ref + (1 − decay)·policy at each refresh."""
    run = copy_toy_run(tmp_path / "run", family="sdxl")
    cfg = train_config(
        run,
        family="sdxl",
        use_lora=True,
        lora_rank=4,
        learning_rate=1e-3,
        ref_update={"mode": "ema", "every": 1, "decay": 0.75},
        max_steps=2,
        checkpoint_every=1,
    )
    out = train(cfg)
    assert out.refreshes == [1, 2]
    s1 = checkpoint_weights(out.checkpoints_dir / "checkpoint-0000001")
    s2 = checkpoint_weights(out.checkpoints_dir / "checkpoint-0000002")
    for k in (k for k in s2 if ".reference." in k):
        expected = 0.75 * s1[k] + 0.25 * s2[k.replace(".reference.", ".policy.")]
        torch.testing.assert_close(s2[k], expected, rtol=1e-6, atol=1e-7)
    tuned = load_tuned_pipeline(cfg.model, out.final_dir, device="cpu")
    assert type(tuned).__name__ == "StableDiffusionXLPipeline"
    assert generate(tuned, ["a yellow triangle"], [0], GEN).latents.shape == (1, 4, 16, 16)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """2 micro-batches of 4 ≡ one batch of 8 (same pairs, same noise); only summation order differs."""
    run_a = copy_toy_run(tmp_path / "a")
    run_b = copy_toy_run(tmp_path / "b")
    train(train_config(run_a, batch_size=8, max_steps=2, eval_pairs=0))
    train(train_config(run_b, batch_size=4, gradient_accumulation_steps=2, max_steps=2, eval_pairs=0))
    wa = checkpoint_weights(run_a / "train" / "majority" / "checkpoints" / "checkpoint-0000002")
    wb = checkpoint_weights(run_b / "train" / "majority" / "checkpoints" / "checkpoint-0000002")
    assert update_mismatch(wa, wb) < UPDATE_TOLERANCE


def test_adafactor_warmup_checkpointing_bf16_and_confidence_weights_run(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(
        run,
        optimizer="adafactor",
        lr_warmup_steps=4,
        gradient_checkpointing=True,
        mixed_precision="bf16",
        weight_by_confidence=True,
        loss_type="hinge",
        max_steps=2,
        log_every=1,
        eval_pairs=0,
    )
    out = train(cfg)
    assert out.metrics["lr"] == pytest.approx(cfg.train.learning_rate * 2 / 4)
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_lora_under_bf16_keeps_both_adapters_float32(tmp_path):
    """Mixed precision: frozen base weights in bf16, policy and reference adapters in fp32, export in fp32."""
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(
        run, use_lora=True, lora_rank=4, learning_rate=1e-3, mixed_precision="bf16", max_steps=2
    )
    cfg.train.eval_pairs = 8
    cfg.train.ref_update.mode = "hard"
    out = train(cfg)
    assert all(math.isfinite(v) for v in out.eval_after.values())
    state = checkpoint_weights(out.last_checkpoint)
    lora = {k: v for k, v in state.items() if "lora_" in k}
    assert lora and all(v.dtype == torch.float32 for v in lora.values())
    assert any(v.dtype == torch.bfloat16 for k, v in state.items() if "lora_" not in k)
    exported = load_file(out.final_dir / "pytorch_lora_weights.safetensors")
    assert exported and all(v.dtype == torch.float32 for v in exported.values())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """An absurd learning rate blows the UNet up after one step: error, checkpoint 1 kept, no final weights."""
    run = copy_toy_run(tmp_path / "run")
    cfg = train_config(
        run, learning_rate=1e36, max_grad_norm=1e30, checkpoint_every=1, max_steps=5, eval_pairs=0
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 2") as err:
        train(cfg)
    ckpts = run / "train" / "majority" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-0000001"]
    assert "checkpoint-0000001" in str(err.value)
    assert not (run / "train" / "majority" / "final").exists()
    manifest = json.loads((run / "train" / "majority" / "manifest.json").read_text())
    assert manifest["status"].startswith("failed: non-finite loss")


@pytest.mark.parametrize(("family", "use_lora"), [("sd21", True), ("sdxl", False)])
def test_step_benchmark_runs_the_trainer_step_on_random_weights(family, use_lora):
    """benchmarks/bench_train.py's step benchmark (what the GPU check calls with size=full) returns numbers."""
    import importlib.util

    path = ROOT / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.bench_steps(family, "tiny", use_lora, "hard", steps=1, batch_size=2, warmup_steps=1)
    assert out["steps_per_s"] > 0 and out["pairs_per_s"] == pytest.approx(2 * out["steps_per_s"])
    assert out["method"] == ("lora" if use_lora else "full") and out["trainable_params_m"] > 0
