"""One Diffusion-DPO optimizer step, and the same forward pass scoring held pairs with fixed noise.

`dpo_forward` is the method: winner and loser share noise and timestep; the reference predicts first (no grad),
then the policy; the loss is `trainer.loss.dpo_loss` on the four denoising errors. `optimizer_step` runs one
optimizer step's micro-batches (this process's share of the global batch), backward, clipping and the update.
`StepContext` is what a step needs, shared with the benchmark so both time the same code. With
`train.prompt_dropout` > 0 a seeded share of the pairs trains on the empty prompt, as the reference trainer does
(`--proportion_empty_prompts`), so the tuned model still works under classifier-free guidance.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from pipeline.config import TrainSection
from trainer.data import TrainData
from trainer.loss import DPOLoss, add_noise, diffusion_target, dpo_loss, per_sample_mse
from trainer.reference import AdapterReference, UNetReference, unet_predict
from trainer.sampling import step_noise, step_pairs, step_prompt_dropout

TRAIN_STREAM, EVAL_STREAM = 0, 1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the optimizer step, last checkpoint kept."""


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
    # Prompt dropout, counted over the whole global batch of the steps this process ran.
    prompts_seen: int = 0
    prompts_dropped: int = 0


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
            empty = step_prompt_dropout(micro_step, global_batch, tcfg.seed, tcfg.prompt_dropout)
            ctx.prompts_seen += global_batch
            ctx.prompts_dropped += int(empty.sum())
            batch = data.batch(rows[mine], device, empty_prompt=empty[mine])
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
