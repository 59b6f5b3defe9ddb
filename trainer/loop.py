"""The accelerate training loop: models, data, steps, checkpoints, final weights — top to bottom, one function.

`train(cfg) -> TrainOutputs` is the Python API (the CLI in `trainer/train.py` and the demo call it). It reads only
`<run>/pairs/<strategy>/` and `<run>/candidates/`, so it can be rerun alone on cached pairs, and writes
`<run>/train/<strategy>/`:

    cache/<key>/          latents, text embeddings (built once, see trainer/data.py)
    checkpoints/checkpoint-NNNNNNN/   accelerate state: policy (+ LoRA reference adapter), optimizer, LR
                          scheduler, RNG, TrainState (step = data position, refresh log), full-FT reference UNet
    logs/                 tensorboard
    final/                diffusers-format weights (trainer/export.py)
    manifest.json         config, data counts, refreshes, metrics before/after, timings, status

One step does only what depends on the step: draw noise and timesteps, one reference UNet pass (no grad), one
policy UNet pass, backward, optimizer. Which pairs and which noise a micro-step uses are pure functions of
(seed, micro-step), so a resumed run and a run split over processes see the same data as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from pipeline.config import RunConfig, TrainSection
from pipeline.io import write_manifest
from trainer.data import TrainData, prepare_train_data, step_noise, step_pairs
from trainer.export import save_final_weights, train_dir
from trainer.loss import DPOLoss, add_noise, diffusion_target, dpo_loss, per_sample_mse
from trainer.reference import (
    AdapterReference,
    UNetReference,
    add_lora_adapters,
    should_refresh,
    unet_predict,
)

logger = logging.getLogger("trainer")
CHECKPOINT_PREFIX = "checkpoint-"
TRAIN_STREAM, EVAL_STREAM = 0, 1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the optimizer step, last checkpoint kept."""


@dataclass
class TrainOutputs:
    """Where a training run put everything, plus its headline numbers."""

    train_dir: Path
    final_dir: Path | None
    checkpoints_dir: Path
    logs_dir: Path
    manifest: Path
    last_checkpoint: Path | None
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    refreshes: list[int] = field(default_factory=list)


class TrainState:
    """Progress saved with each checkpoint: the optimizer step (which fixes the data position) and refreshes."""

    def __init__(self) -> None:
        self.step = 0
        self.refreshes: list[int] = []

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "refreshes": list(self.refreshes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.refreshes = [int(s) for s in state["refreshes"]]


def dpo_forward(
    unet: torch.nn.Module,
    reference: AdapterReference | UNetReference,
    batch: dict[str, torch.Tensor],
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    tcfg: TrainSection,
) -> DPOLoss:
    """Winner and loser share noise and timestep; reference pass first (no grad), then the policy pass."""
    n = batch["latents_w"].shape[0]
    latents = torch.cat([batch["latents_w"], batch["latents_l"]])
    eps = torch.cat([noise, noise])
    t = torch.cat([timesteps, timesteps])
    alpha_bar = alphas_cumprod[t]
    noisy = add_noise(latents, eps, alpha_bar)
    target = diffusion_target(prediction_type, latents, eps, alpha_bar)
    cond = {k: torch.cat([batch[k], batch[k]]) for k in ("embeds", "pooled", "time_ids") if k in batch}
    with record_function("dpo/reference_unet"):
        ref_mse = per_sample_mse(reference.predict(noisy, t, cond), target)
    with record_function("dpo/policy_unet"):
        policy_mse = per_sample_mse(unet_predict(unet, noisy, t, cond), target)
    weights = batch["confidence"] if tcfg.weight_by_confidence else None
    return dpo_loss(
        policy_mse[:n],
        policy_mse[n:],
        ref_mse[:n],
        ref_mse[n:],
        tcfg.beta,
        tcfg.loss_type,
        weights,
        dpop_lambda=tcfg.dpop_lambda,
    )


@torch.no_grad()
def evaluate_pairs(
    unet: torch.nn.Module,
    reference: AdapterReference | UNetReference,
    data: TrainData,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    tcfg: TrainSection,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    """DPO metrics of the policy vs the current reference on the first `eval_pairs` pairs, with fixed noise.

    Every metric is a mean over pairs, so chunk means weighted by chunk size give the exact overall mean.
    """
    n = min(tcfg.eval_pairs, len(data))
    was_training = unet.training
    unet.eval()
    sums: dict[str, float] = {}
    for i, start in enumerate(range(0, n, batch_size)):
        rows = np.arange(start, min(start + batch_size, n))
        noise, t = step_noise(i, len(rows), data.latent_shape, len(alphas_cumprod), tcfg.seed, EVAL_STREAM)
        batch = data.batch(rows, device)
        out = dpo_forward(
            unet, reference, batch, noise.to(device), t.to(device), alphas_cumprod, prediction_type, tcfg
        )
        for k, v in out.metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(rows)
    unet.train(was_training)
    return {k: v / n for k, v in sums.items()}


@dataclass
class StepContext:
    """What one optimizer step needs; shared by `train` and the benchmark, so both time the same code."""

    accelerator: Any
    unet: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    reference: AdapterReference | UNetReference
    optimizer: Any
    lr_scheduler: Any
    params: list[torch.nn.Parameter]
    data: TrainData
    tcfg: TrainSection
    alphas_cumprod: torch.Tensor
    prediction_type: str


def optimizer_step(ctx: StepContext, step: int) -> dict[str, torch.Tensor]:
    """Optimizer step `step` (0-based): its micro-batches (this process's share), backward, clip, update.

    Returns the step's metrics (means over micro-batches, still on the device). Raises `NonFiniteLossError`
    before touching the weights if any process's loss is NaN or infinite.
    """
    acc, tcfg, data = ctx.accelerator, ctx.tcfg, ctx.data
    device = acc.device
    accum = tcfg.gradient_accumulation_steps
    global_batch = tcfg.batch_size * acc.num_processes
    mine = slice(acc.process_index * tcfg.batch_size, (acc.process_index + 1) * tcfg.batch_size)
    metrics: dict[str, torch.Tensor] = {}
    for micro in range(accum):
        micro_step = step * accum + micro
        with record_function("dpo/data"):
            rows = step_pairs(micro_step, global_batch, len(data), tcfg.seed)
            noise, timesteps = step_noise(
                micro_step, global_batch, data.latent_shape, len(ctx.alphas_cumprod), tcfg.seed, TRAIN_STREAM
            )
            batch = data.batch(rows[mine], device)
            noise, timesteps = noise[mine].to(device), timesteps[mine].to(device)
        sync = acc.no_sync(ctx.unet) if micro < accum - 1 else nullcontext()
        with sync:
            with acc.autocast():
                out = dpo_forward(
                    ctx.unet,
                    ctx.reference,
                    batch,
                    noise,
                    timesteps,
                    ctx.alphas_cumprod,
                    ctx.prediction_type,
                    tcfg,
                )
            losses = acc.gather(out.loss.detach().reshape(1))
            if not torch.isfinite(losses).all():
                raise NonFiniteLossError(
                    f"non-finite loss {losses.tolist()} at step {step + 1} (micro-step {micro}); "
                    "stopped before the optimizer step"
                )
            with record_function("dpo/backward"):
                acc.backward(out.loss / accum)
        for k, v in out.metrics.items():
            metrics[k] = metrics.get(k, 0.0) + v / accum
    with record_function("dpo/optimizer"):
        if acc.sync_gradients:
            acc.clip_grad_norm_(ctx.params, tcfg.max_grad_norm)
        ctx.optimizer.step()
        ctx.lr_scheduler.step()
        ctx.optimizer.zero_grad(set_to_none=True)
    return metrics


def reduce_window(accelerator, window: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
    """Mean of summed step metrics over the window and over processes (one collective)."""
    keys = list(window)
    reduced = accelerator.reduce(torch.stack([window[k] for k in keys]) / steps, reduction="mean")
    return dict(zip(keys, reduced.tolist(), strict=True))


def find_checkpoint(resume: str, checkpoints_dir: Path) -> Path | None:
    """`auto`: the newest complete checkpoint (or none); `never`: none; anything else: that directory."""
    if resume == "never":
        return None
    if resume == "auto":
        found = sorted(p for p in checkpoints_dir.glob(CHECKPOINT_PREFIX + "*") if p.is_dir())
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"train.resume: checkpoint directory not found: {path}")
    return path


def save_checkpoint(accelerator, checkpoints_dir: Path, step: int, keep: int) -> Path:
    """accelerate `save_state` into a temporary directory, renamed when every process has written its part."""
    final = checkpoints_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = checkpoints_dir / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(checkpoints_dir.glob(CHECKPOINT_PREFIX + "*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _flat_hparams(tcfg: TrainSection) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tcfg.model_dump(mode="json").items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, list):
            flat[k] = ",".join(map(str, v))
        else:
            flat[k] = v
    return flat


def _build_optimizer(params: list[torch.nn.Parameter], tcfg: TrainSection) -> torch.optim.Optimizer:
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
    from transformers.optimization import Adafactor

    return Adafactor(
        params,
        lr=tcfg.learning_rate,
        weight_decay=tcfg.weight_decay,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )


def _load_models(cfg: RunConfig, device: torch.device):
    """The UNet to train and the noise schedule; text encoders and VAE are loaded only to build the cache."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from pipeline.model_zoo import detect_family, resolve_pretrained

    path = resolve_pretrained(cfg.model.pretrained)
    family = detect_family(cfg.model.pretrained, cfg.model.family)
    unet = UNet2DConditionModel.from_pretrained(
        path, subfolder="unet", revision=cfg.model.revision, variant=cfg.model.variant
    )
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", revision=cfg.model.revision)
    return path, family, unet, scheduler


def build_training(unet: torch.nn.Module, tcfg: TrainSection, device: torch.device):
    """Policy (LoRA adapters or all weights trainable), reference, optimizer and LR schedule, on `device`.

    Returns (unet, reference, trainable params, optimizer, lr_scheduler), none of them prepared by accelerate yet.
    """
    from diffusers.optimization import get_scheduler

    if tcfg.use_lora:
        add_lora_adapters(unet, tcfg.lora_rank, tcfg.lora_alpha, tcfg.lora_target_modules)
    else:
        unet.requires_grad_(True)
    if tcfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    half = None
    if tcfg.mixed_precision != "no":  # fp16 needs a GPU; bf16 also runs (and is tested) on CPU
        half = torch.float16 if tcfg.mixed_precision == "fp16" else torch.bfloat16
    if tcfg.use_lora and half is not None:
        # Frozen base weights in half precision; both adapters stay float32.
        unet.to(half)
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()
    unet.to(device)
    unet.train()
    if tcfg.use_lora:
        reference: AdapterReference | UNetReference = AdapterReference(unet)
    else:  # a frozen copy; under mixed precision it is stored in half precision, as it only predicts
        reference = UNetReference(unet).to(device, dtype=half)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _build_optimizer(params, tcfg)
    lr_scheduler = get_scheduler(
        "constant_with_warmup" if tcfg.lr_scheduler == "constant" else tcfg.lr_scheduler,
        optimizer,
        num_warmup_steps=tcfg.lr_warmup_steps,
        num_training_steps=tcfg.max_steps,
    )
    return unet, reference, params, optimizer, lr_scheduler


def train(cfg: RunConfig, stop_at_step: int | None = None) -> TrainOutputs:
    """Train the configured strategy's pairs; resume from the newest checkpoint when `train.resume` is auto.

    `stop_at_step` ends the process's work after that optimizer step (after checkpointing it), as a preempted
    job would; a later call resumes. Raises `TrainDataError` on bad tables and `NonFiniteLossError` on a NaN/inf
    loss (the last good checkpoint is kept, nothing newer is written).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    tcfg = cfg.train
    out_dir = train_dir(cfg.output_dir, tcfg.strategy)
    checkpoints_dir, logs_dir, final_dir = out_dir / "checkpoints", out_dir / "logs", out_dir / "final"
    accelerator = Accelerator(
        # Several processes and no GPU: gloo on CPU (`accelerate launch --multi_gpu --num_processes N` on a CPU box).
        cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
        mixed_precision=tcfg.mixed_precision,
        log_with=None if tcfg.tracker == "none" else tcfg.tracker,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(logs_dir)),
    )
    device = accelerator.device
    timings: dict[str, float] = {}
    try:
        set_seed(tcfg.seed)
        t0 = time.perf_counter()
        model_path, family, unet, noise_scheduler = _load_models(cfg, device)

        def pipe_factory():
            from pipeline.diffusion import load_pipeline

            pipe = load_pipeline(cfg.model, device=str(device))
            if pipe.vae.dtype != torch.float32:  # encode external images in fp32 (SDXL VAE overflows in fp16)
                pipe.vae.to(torch.float32)
            return pipe

        with accelerator.main_process_first():
            data = prepare_train_data(
                Path(cfg.output_dir) / "pairs" / tcfg.strategy,
                Path(cfg.output_dir) / "candidates",
                out_dir / "cache",
                f"{cfg.model.pretrained}|{model_path}|{cfg.model.revision}|{cfg.model.variant}",
                pipe_factory,
                unet.config.in_channels,
                tcfg.encode_batch_size,
            )
        timings["prepare_s"] = time.perf_counter() - t0

        unet, reference, params, optimizer, lr_scheduler = build_training(unet, tcfg, device)
        unet, optimizer = accelerator.prepare(unet, optimizer)
        state = TrainState()
        accelerator.register_for_checkpointing(lr_scheduler, state)
        if isinstance(reference, UNetReference):
            accelerator.register_for_checkpointing(reference)

        last_checkpoint = resumed_from = find_checkpoint(tcfg.resume, checkpoints_dir)
        if last_checkpoint is not None:
            accelerator.load_state(str(last_checkpoint))
            logger.info("resumed from %s at step %d", last_checkpoint, state.step)
        if accelerator.is_main_process and tcfg.tracker != "none":
            accelerator.init_trackers("dpo", config=_flat_hparams(tcfg))

        alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
        prediction_type = noise_scheduler.config.prediction_type
        raw_unet = accelerator.unwrap_model(unet)
        eval_before: dict[str, float] = {}
        if tcfg.eval_pairs and state.step == 0:
            with accelerator.autocast():  # same numerics as the training step (half weights on GPU)
                eval_before = evaluate_pairs(
                    raw_unet, reference, data, alphas_cumprod, prediction_type, tcfg, device, tcfg.batch_size
                )

        world = accelerator.num_processes
        global_batch = tcfg.batch_size * world
        accum = tcfg.gradient_accumulation_steps
        progress = tqdm(
            total=tcfg.max_steps,
            initial=state.step,
            desc="dpo",
            disable=not accelerator.is_local_main_process,
        )
        window: dict[str, torch.Tensor] = {}
        window_steps = 0
        eval_after: dict[str, float] = {}
        last_metrics: dict[str, float] = {}
        t_train = time.perf_counter()
        steps_done = 0
        ctx = StepContext(
            accelerator, unet, reference, optimizer, lr_scheduler, params, data, tcfg, alphas_cumprod,
            prediction_type,
        )  # fmt: skip
        while state.step < tcfg.max_steps and (stop_at_step is None or state.step < stop_at_step):
            try:
                step_metrics = optimizer_step(ctx, state.step)
            except NonFiniteLossError as exc:
                message = f"{exc}; last good checkpoint: {last_checkpoint}"
                if accelerator.is_main_process:
                    write_manifest(
                        out_dir,
                        stage="train",
                        status=f"failed: {message}",
                        step=state.step,
                        last_checkpoint=str(last_checkpoint) if last_checkpoint else None,
                        config=cfg.model_dump(mode="json"),
                    )
                raise NonFiniteLossError(message) from None
            state.step += 1
            steps_done += 1
            progress.update(1)

            if state.step == tcfg.max_steps and tcfg.eval_pairs:
                # Before the schedule's last refresh: against a reference just copied from the policy, the
                # comparison would read 0.5 by construction.
                with accelerator.autocast():
                    eval_after = evaluate_pairs(
                        raw_unet,
                        reference,
                        data,
                        alphas_cumprod,
                        prediction_type,
                        tcfg,
                        device,
                        tcfg.batch_size,
                    )
            if should_refresh(state.step, tcfg.ref_update.mode, tcfg.ref_update.every):
                with record_function("dpo/refresh"):
                    reference.refresh(raw_unet, tcfg.ref_update.mode, tcfg.ref_update.decay)
                state.refreshes.append(state.step)
                accelerator.log({"ref/refresh": 1.0}, step=state.step)
                logger.info("reference refreshed (%s) at step %d", tcfg.ref_update.mode, state.step)
                progress.write(f"[ref] {tcfg.ref_update.mode} refresh at step {state.step}")

            for k, v in step_metrics.items():  # summed on the device; one reduction per log line
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            if state.step % tcfg.log_every == 0 or state.step == tcfg.max_steps:
                last_metrics = reduce_window(accelerator, window, window_steps)
                last_metrics["lr"] = lr_scheduler.get_last_lr()[0]
                accelerator.log({f"train/{k}": v for k, v in last_metrics.items()}, step=state.step)
                progress.set_postfix(
                    loss=f"{last_metrics['loss']:.4f}", acc=f"{last_metrics['implicit_acc']:.2f}"
                )
                window, window_steps = {}, 0
            if (
                state.step % tcfg.checkpoint_every == 0
                or state.step == tcfg.max_steps
                or state.step == stop_at_step
            ):
                last_checkpoint = save_checkpoint(
                    accelerator, checkpoints_dir, state.step, tcfg.keep_checkpoints
                )
        progress.close()
        timings["train_s"] = time.perf_counter() - t_train
        timings["steps_per_s"] = steps_done / timings["train_s"] if steps_done else math.nan
        if window_steps:
            last_metrics = reduce_window(accelerator, window, window_steps)

        finished = state.step >= tcfg.max_steps
        accelerator.wait_for_everyone()
        written_final: Path | None = None
        if finished and accelerator.is_main_process:
            info = {"base_model": cfg.model.pretrained, "family": family, "step": state.step}
            tmp_final = out_dir / ".tmp-final"
            shutil.rmtree(tmp_final, ignore_errors=True)
            save_final_weights(raw_unet, tmp_final, tcfg.use_lora, family == "sdxl", info)
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp_final.rename(final_dir)
        if finished:
            written_final = final_dir
        status = "finished" if finished else f"stopped at step {state.step}"
        manifest = out_dir / "manifest.json"
        if accelerator.is_main_process:
            write_manifest(
                out_dir,
                stage="train",
                status=status,
                config=json.loads(json.dumps(cfg.model_dump(mode="json"), default=str)),
                family=family,
                num_pairs=len(data),
                num_images=int(data.latents.shape[0]),
                num_prompts=int(data.embeds.shape[0]),
                num_vae_encoded=data.num_vae_encoded,
                latent_shape=list(data.latent_shape),
                num_processes=world,
                global_batch=global_batch * accum,
                step=state.step,
                reference_refreshes=state.refreshes,
                resumed_from=str(resumed_from) if resumed_from else None,
                last_checkpoint=str(last_checkpoint) if last_checkpoint else None,
                final_weights=str(written_final) if written_final else None,
                train_metrics=last_metrics,
                eval_before=eval_before,
                eval_after=eval_after,
                timings=timings,
            )
        accelerator.wait_for_everyone()
        return TrainOutputs(
            train_dir=out_dir,
            final_dir=written_final,
            checkpoints_dir=checkpoints_dir,
            logs_dir=logs_dir,
            manifest=manifest,
            last_checkpoint=last_checkpoint,
            step=state.step,
            metrics=last_metrics,
            eval_before=eval_before,
            eval_after=eval_after,
            refreshes=list(state.refreshes),
        )
    finally:
        accelerator.end_training()
        if accelerator.num_processes == 1:
            # Let a later train() in this process build a fresh Accelerator (e.g. another precision).
            AcceleratorState._reset_state(reset_partial_state=True)
