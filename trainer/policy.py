"""What training starts from: the UNet and noise schedule, then the policy, its reference, optimizer and LR schedule.

With LoRA, the policy is a trainable adapter on a frozen UNet and the reference a second, frozen adapter (a refresh
copies a few MB); with a full fine-tune, every UNet weight trains and the reference is a frozen copy. Under mixed
precision the frozen base weights are stored in half precision and the adapters stay float32.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config import RunConfig, TrainSection
from trainer.reference import AdapterReference, UNetReference, add_lora_adapters
from trainer.scaling import effective_learning_rate


def load_models(cfg: RunConfig, device: torch.device):
    """The UNet to train and the noise schedule; text encoders and VAE are loaded only to build the cache."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from pipeline.models.zoo import detect_family, resolve_pretrained

    path = resolve_pretrained(cfg.model.pretrained)
    family = detect_family(cfg.model.pretrained, cfg.model.family)
    unet = UNet2DConditionModel.from_pretrained(
        path, subfolder="unet", revision=cfg.model.revision, variant=cfg.model.variant
    )
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", revision=cfg.model.revision)
    return path, family, unet, scheduler


def build_training(unet: Any, tcfg: TrainSection, device: torch.device, num_processes: int = 1):
    """Policy (LoRA adapters or all weights trainable), reference, optimizer and LR schedule, on `device`.

    The optimizer's learning rate is `trainer.scaling.effective_learning_rate` (scaled by the effective batch
    with `train.scale_lr`, which needs the number of processes). Returns (unet, reference, trainable params,
    optimizer, lr_scheduler), none of them prepared by accelerate yet.
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
    optimizer = build_optimizer(params, tcfg, effective_learning_rate(tcfg, num_processes))
    lr_scheduler = get_scheduler(
        "constant_with_warmup" if tcfg.lr_scheduler == "constant" else tcfg.lr_scheduler,
        optimizer,
        num_warmup_steps=tcfg.lr_warmup_steps,
        num_training_steps=tcfg.max_steps,
    )
    return unet, reference, params, optimizer, lr_scheduler


def build_optimizer(
    params: list[torch.nn.Parameter], tcfg: TrainSection, lr: float | None = None
) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999, eps 1e-8, as the reference) or Adafactor with a fixed learning rate (the
    reference's SDXL setting: no relative step, no parameter scaling, update clipping at 1.0)."""
    lr = tcfg.learning_rate if lr is None else lr
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=tcfg.weight_decay)
    from transformers.optimization import Adafactor

    return Adafactor(
        params,
        lr=lr,
        weight_decay=tcfg.weight_decay,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
        clip_threshold=1.0,
    )
