"""Load a diffusers pipeline from a config, and generate images together with their final latents.

Generation keeps the final latent next to each image so the trainer never runs the VAE encoder on its own
samples. Every image gets its own `torch.Generator` seeded from its seed, so any image can be regenerated alone.

The pipeline stops at the latents and `decode_latents` decodes them as the diffusers pipelines do: a float16 VAE
whose config sets `force_upcast` (the SDXL VAE, whose activations overflow float16) decodes in float32.
`model.vae` swaps in another VAE (e.g. an fp16-safe SDXL VAE). An image or latent that is still not finite is
reported per image (`Generated.problems`), never passed on as a black image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from PIL import Image

from pipeline.config import GenerationSection, ModelSection
from pipeline.images import png_bytes
from pipeline.models.zoo import detect_family, resolve_pretrained

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SCHEDULERS = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,
}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """Half precision is for GPUs; on CPU everything runs in float32."""
    return _DTYPES[name] if device.type == "cuda" else torch.float32


def load_pipeline(model: ModelSection, device: str = "auto", scheduler: str = "default") -> DiffusionPipeline:
    """The configured pipeline on `device`, safety checker off (it blacks out images and biases the scores)."""
    dev = pick_device(device)
    path = resolve_pretrained(model.pretrained)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(model.dtype, dev),
        "revision": model.revision,
        "variant": model.variant,
    }
    if detect_family(model.pretrained, model.family) != "sdxl":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if model.vae is not None:
        kwargs["vae"] = load_vae(model.vae, kwargs["dtype"], model.revision)
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    use_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def use_scheduler(pipe: DiffusionPipeline, scheduler: str) -> DiffusionPipeline:
    """Swap in the configured sampler (`default`: keep the model's own), built from the model's scheduler config."""
    if scheduler != "default":
        pipe.scheduler = _SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def replace_unet(
    pipe: DiffusionPipeline, unet: str, dtype: str = "float32", revision: str | None = None
) -> DiffusionPipeline:
    """Put a UNet-only checkpoint into a loaded pipeline, as the public Diffusion-DPO weights are used.

    `unet` is a hub id or a local directory holding `unet/` (the layout of `mhdang/dpo-sd1.5-text2image-v1`), or a
    UNet directory itself (`config.json` + weights).
    """
    from diffusers import UNet2DConditionModel

    local = Path(unet).expanduser()
    subfolder = None if local.is_dir() and not (local / "unet").is_dir() else "unet"
    model = UNet2DConditionModel.from_pretrained(
        str(local) if local.is_dir() else unet,
        subfolder=subfolder,
        revision=revision,
        torch_dtype=torch_dtype(dtype, pipe.device),
    )
    if model.config.cross_attention_dim != pipe.unet.config.cross_attention_dim:
        raise ValueError(
            f"UNet {unet}: cross-attention width {model.config.cross_attention_dim} does not fit the base "
            f"pipeline's text encoder ({pipe.unet.config.cross_attention_dim}); is it for another model family?"
        )
    pipe.unet = model.to(pipe.device)
    return pipe


def load_vae(ref: str, dtype: torch.dtype, revision: str | None = None):
    """An AutoencoderKL from a hub id or a local directory: the VAE itself (`config.json` at its root, as
    `madebyollin/sdxl-vae-fp16-fix`), or a whole pipeline directory with a `vae/` subfolder."""
    from diffusers import AutoencoderKL

    local = Path(ref).expanduser()
    if ref.startswith((".", "/", "~")) and not local.exists():
        raise FileNotFoundError(f"model.vae: directory not found: {local}")
    subfolder = "vae" if (local / "vae" / "config.json").is_file() else None
    return AutoencoderKL.from_pretrained(
        str(local) if local.exists() else ref, subfolder=subfolder, torch_dtype=dtype, revision=revision
    )


@dataclass
class Generated:
    """One batch of generated images: PNG bytes and the final (scaled) latents, in input order.

    `problems[i]` is None for a good image, else why image i cannot be used (a non-finite latent or decoded
    image); such an image's PNG is what the decoder made of it and must not become a candidate.
    """

    png: list[bytes]
    latents: np.ndarray  # (batch, 4, h/8, w/8) float32, already multiplied by the VAE scaling factor
    images: list[Image.Image]
    problems: list[str | None]


@torch.inference_mode()
def generate(
    pipe: DiffusionPipeline, prompts: list[str], seeds: list[int], gen: GenerationSection
) -> Generated:
    """Generate one image per (prompt, seed); each image's noise comes from its own seeded generator."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    device = pipe.device
    gen_device = "cpu" if device.type == "mps" else device
    generators = [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]
    latents = pipe(
        prompt=list(prompts),
        height=gen.height,
        width=gen.width,
        num_inference_steps=gen.num_inference_steps,
        guidance_scale=gen.guidance_scale,
        generator=generators,
        output_type="latent",
    ).images
    decoded = decode_latents(pipe, latents)
    images = pipe.image_processor.postprocess(decoded, output_type="pil")
    return Generated(
        png=[png_bytes(im) for im in images],
        latents=latents.float().cpu().numpy(),
        images=images,
        problems=nonfinite_problems(latents, decoded),
    )


def nonfinite_problems(latents: torch.Tensor, decoded: torch.Tensor) -> list[str | None]:
    """Per image: None when its latent and decoded pixels are all finite, else what is not."""
    bad_latent = (~torch.isfinite(latents.float())).flatten(1).any(1).tolist()
    bad_image = (~torch.isfinite(decoded.float())).flatten(1).any(1).tolist()
    problems: list[str | None] = []
    for lat, img in zip(bad_latent, bad_image, strict=True):
        what = [name for name, bad in (("latent", lat), ("decoded image", img)) if bad]
        problems.append(f"non-finite {' and '.join(what)} (NaN/inf)" if what else None)
    return problems


def needs_upcast(vae) -> bool:
    """The diffusers pipelines' rule: a float16 VAE whose config asks for it decodes in float32."""
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


@torch.inference_mode()
def decode_latents(pipe: DiffusionPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → decoded images in [−1, 1] (the VAE's output), upcasting the VAE as diffusers does.

    The VAE stays in float32 once upcast: the next batch needs it too, and the cast back and forth would cost a
    copy of its weights per batch.
    """
    vae = pipe.vae
    if needs_upcast(vae):
        vae.to(torch.float32)
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
