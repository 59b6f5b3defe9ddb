"""Brief noise-prediction pre-training of a tiny UNet on the project's own synthetic images.

A random-weight UNet is not a usable starting point for DPO: DDIM's x0 estimate amplifies its noise prediction, so
its samples are latents with std ≈ 15, and DPO on pairs of such samples moves generation away from the winners
(measured in an early throwaway experiment; `docs/tiny_models.md`). Plain denoising training on synthetic shapes gives the tiny model images
with structure, and DPO can then improve on them: 1500 steps, because on the proof's development split DPO from the
500-step model was not distinguishable from its base for one of two seeds, and from the 1500-step model it was for
both (docs/proof_of_learning.md, docs/tiny_models.md). The default's weights (`tiny/sd15-pretrained`) are built once by
this code and committed (`pipeline/models/assets/`, `docs/tiny_models.md`); `tiny/sd21-pretrained` is still built
on first use and cached like a download (`pipeline/models/zoo.py`).

The training runs with a pinned torch thread count (`PretrainSettings.threads`, 1): float sums are split across
threads, so the same code built different weights at 1 and at 2 threads.

Captions are short colour descriptions read off each image (`pipeline.models.synthetic.describe`) ("a red shape on a blue background"), so the text
encoder's output carries some information the UNet can use, and a fraction are dropped to "" so classifier-free
guidance has an unconditional model to contrast with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.models.synthetic import describe, synthetic_images

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainSettings:
    """Every knob of the pre-training in one place; changing a default changes the cached model's identity."""

    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 1e-3
    num_images: int = 512
    caption_dropout: float = 0.1
    seed: int = 0
    data_seed: int = 4321  # synthetic set, distinct from the one used to measure the VAE scale
    threads: int = 1  # torch intra-op threads while training: the weights depend on it


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def encode_images(vae, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Scaled latents of the images (VAE posterior mean × scaling factor), the space the UNet denoises in."""
    chunks = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(vae.device, vae.dtype)
        chunks.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(chunks).float()


@torch.no_grad()
def encode_captions(pipe, captions: list[str]) -> torch.Tensor:
    """Text-encoder hidden states for each caption, padded to the tokenizer's length as the pipeline does."""
    tokens = pipe.tokenizer(
        captions,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return pipe.text_encoder(tokens.input_ids.to(pipe.text_encoder.device))[0].float()


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"pre-training supports epsilon and v_prediction models, not {kind!r}")


def pretrain_unet(pipe, settings: PretrainSettings = PretrainSettings()) -> dict[str, object]:
    """Train `pipe.unet` in place on captioned synthetic images; returns a summary (losses, timing).

    Only the UNet learns; the VAE and text encoder stay as built, and their outputs are computed once. Everything
    runs with `settings.threads` torch threads (restored afterwards), so the result does not depend on the caller's.
    """
    if getattr(pipe.unet.config, "addition_embed_type", None) is not None:
        raise ValueError("pre-training supports SD1.5/SD2.1-style UNets, not SDXL's text_time conditioning")
    with torch_threads(settings.threads):
        return _pretrain_unet(pipe, settings)


def _pretrain_unet(pipe, settings: PretrainSettings) -> dict[str, object]:
    t_start = time.perf_counter()
    size = pipe.vae.config.sample_size
    images = synthetic_images(settings.num_images, size=size, seed=settings.data_seed)
    captions = [describe(im) for im in images]
    latents = encode_images(pipe.vae, images)
    vocabulary = [*sorted(set(captions)), ""]
    embeddings = encode_captions(pipe, vocabulary)
    caption_index = torch.tensor([vocabulary.index(c) for c in captions])
    empty = len(vocabulary) - 1

    unet, scheduler = pipe.unet, pipe.scheduler
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    num_timesteps = scheduler.config.num_train_timesteps
    losses: list[float] = []
    for step in range(settings.steps):
        idx = torch.randint(0, len(latents), (settings.batch_size,), generator=generator)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, num_timesteps, (settings.batch_size,), generator=generator)
        drop = torch.rand(settings.batch_size, generator=generator) < settings.caption_dropout
        context = embeddings[torch.where(drop, empty, caption_index[idx])]
        noisy = scheduler.add_noise(x0, noise, t)
        prediction = unet(noisy, t, context).sample
        loss = torch.nn.functional.mse_loss(prediction, training_target(scheduler, x0, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            logger.info(
                "pre-training step %d/%d, loss %.4f", step + 1, settings.steps, np.mean(losses[-100:])
            )
    unet.eval()
    unet.requires_grad_(False)
    window = max(1, settings.steps // 10)
    return {
        "settings": asdict(settings),
        "captions": len(vocabulary) - 1,
        "loss_first_tenth": float(np.mean(losses[:window])),
        "loss_last_tenth": float(np.mean(losses[-window:])),
        "seconds": time.perf_counter() - t_start,
    }
