"""Architectures of SD1.5, SD2.1 and SDXL, full size and tiny, instantiated with random weights and no download.

Full-size configs cost the same compute as the real models, so GPU benchmarks measure real throughput and memory
without the hub. Tiny configs keep every structural feature of the real family (cross-attention, linear projections,
v-prediction, SDXL's two text encoders and time ids) at a size that runs on a laptop CPU in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from pipeline.models.refs import Family

Size = Literal["tiny", "full"]
NATIVE_RESOLUTION: dict[Family, int] = {"sd15": 512, "sd21": 768, "sdxl": 1024}


@dataclass(frozen=True)
class Architecture:
    """Everything needed to instantiate one family at one size."""

    family: Family
    size: Size
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[dict[str, Any]]  # one per encoder; SDXL's second has a projection
    prediction_type: Literal["epsilon", "v_prediction"]
    pad_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>"])


_CLIP_VOCAB = 49408


def _text(
    hidden: int, layers: int, heads: int, inter: int, act: str, proj: int, with_projection: bool = False
):
    return {
        "vocab_size": _CLIP_VOCAB,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": proj,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
        "with_projection": with_projection,
    }


def _vae(
    channels: tuple[int, ...], sample_size: int, scaling_factor: float, layers: int = 2
) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": channels,
        "down_block_types": ("DownEncoderBlock2D",) * len(channels),
        "up_block_types": ("UpDecoderBlock2D",) * len(channels),
        "layers_per_block": layers,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }


def _sd_unet(
    channels, down, up, cross, heads, sample_size, layers=2, linear=False, **extra
) -> dict[str, Any]:
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": layers,
        "block_out_channels": channels,
        "down_block_types": down,
        "up_block_types": up,
        "cross_attention_dim": cross,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "norm_num_groups": 32,
        **extra,
    }


_SD_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_SD_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_TINY_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D")
_TINY_UP = ("CrossAttnUpBlock2D", "UpBlock2D")
# Tiny VAE: three blocks, so images are 4× the latent size (64×64 images ↔ 16×16 latents). Its scaling factor
# is measured from the latent std on synthetic images when the tiny model is built (a random VAE's latents
# are not SD's, so SD's 0.18215 would be wrong).
_TINY_VAE_CHANNELS = (32, 64, 64)

ARCHITECTURES: dict[tuple[Family, Size], Architecture] = {
    ("sd15", "full"): Architecture(
        "sd15",
        "full",
        unet=_sd_unet((320, 640, 1280, 1280), _SD_DOWN, _SD_UP, 768, 8, 64),
        vae=_vae((128, 256, 512, 512), 512, 0.18215),
        text_encoders=[_text(768, 12, 12, 3072, "quick_gelu", 768)],
        prediction_type="epsilon",
    ),
    ("sd21", "full"): Architecture(
        "sd21",
        "full",
        unet=_sd_unet((320, 640, 1280, 1280), _SD_DOWN, _SD_UP, 1024, (5, 10, 20, 20), 96, linear=True),
        vae=_vae((128, 256, 512, 512), 768, 0.18215),
        text_encoders=[_text(1024, 23, 16, 4096, "gelu", 512)],
        prediction_type="v_prediction",
        pad_tokens=["!"],
    ),
    ("sdxl", "full"): Architecture(
        "sdxl",
        "full",
        unet=_sd_unet(
            (320, 640, 1280),
            ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            2048,
            (5, 10, 20),
            128,
            linear=True,
            transformer_layers_per_block=(1, 2, 10),
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,  # 6 time ids × 256 + pooled 1280
        ),
        vae=_vae((128, 256, 512, 512), 1024, 0.13025),
        text_encoders=[
            _text(768, 12, 12, 3072, "quick_gelu", 768),
            _text(1280, 32, 20, 5120, "gelu", 1280, with_projection=True),
        ],
        prediction_type="epsilon",
        pad_tokens=["<|endoftext|>", "!"],
    ),
    ("sd15", "tiny"): Architecture(
        "sd15",
        "tiny",
        unet=_sd_unet((32, 64), _TINY_DOWN, _TINY_UP, 32, 8, 16),
        vae=_vae(_TINY_VAE_CHANNELS, 64, 1.0, layers=1),
        text_encoders=[_text(32, 4, 4, 64, "quick_gelu", 32)],
        prediction_type="epsilon",
    ),
    ("sd21", "tiny"): Architecture(
        "sd21",
        "tiny",
        unet=_sd_unet((32, 64), _TINY_DOWN, _TINY_UP, 32, (2, 4), 16, linear=True),
        vae=_vae(_TINY_VAE_CHANNELS, 64, 1.0, layers=1),
        text_encoders=[_text(32, 4, 4, 64, "gelu", 32)],
        prediction_type="v_prediction",
        pad_tokens=["!"],
    ),
    ("sdxl", "tiny"): Architecture(
        "sdxl",
        "tiny",
        unet=_sd_unet(
            (32, 64),
            _TINY_DOWN,
            _TINY_UP,
            64,  # te1 hidden 32 + te2 hidden 32
            (2, 4),
            16,
            linear=True,
            transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + pooled 32
        ),
        vae=_vae(_TINY_VAE_CHANNELS, 64, 1.0, layers=1),
        text_encoders=[
            _text(32, 4, 4, 64, "quick_gelu", 32),
            _text(32, 4, 4, 64, "gelu", 32, with_projection=True),
        ],
        prediction_type="epsilon",
        pad_tokens=["<|endoftext|>", "!"],
    ),
}


def scheduler_for(prediction_type: str) -> DDIMScheduler:
    """SD's training noise schedule (scaled-linear betas, 1000 steps) with a DDIM sampler."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
        timestep_spacing="leading",
    )


def build_unet(arch: Architecture) -> UNet2DConditionModel:
    return UNet2DConditionModel(**arch.unet)


def build_vae(arch: Architecture) -> AutoencoderKL:
    return AutoencoderKL(**arch.vae)


def build_text_encoder(cfg: dict[str, Any]) -> CLIPTextModel | CLIPTextModelWithProjection:
    cfg = dict(cfg)
    with_projection = cfg.pop("with_projection")
    config = CLIPTextConfig(**cfg)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def build_random_pipeline(
    family: Family,
    size: Size,
    tokenizers: list[CLIPTokenizer],
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A complete diffusers pipeline of `family` with random weights, reproducible from `seed`."""
    arch = ARCHITECTURES[(family, size)]
    if len(tokenizers) != len(arch.text_encoders):
        raise ValueError(f"{family} needs {len(arch.text_encoders)} tokenizers, got {len(tokenizers)}")
    torch.manual_seed(seed)
    unet = build_unet(arch)
    torch.manual_seed(seed + 1)
    vae = build_vae(arch)
    encoders = []
    for i, te_cfg in enumerate(arch.text_encoders):
        torch.manual_seed(seed + 2 + i)
        encoders.append(build_text_encoder(te_cfg))
    scheduler = scheduler_for(arch.prediction_type)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=encoders[0],
            text_encoder_2=encoders[1],
            tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1],
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=encoders[0],
            tokenizer=tokenizers[0],
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return pipe.to(dtype=dtype)
