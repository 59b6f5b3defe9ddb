"""Resolve a model reference to something `from_pretrained` loads: a hub id, a local directory, or `tiny/<family>`.

`tiny/<family>` names an embedded random-weight model of the real architecture. It is built once with a fixed seed,
saved with `save_pretrained` into a local cache (like a download), and from then on loaded back through the same
`from_pretrained(path)` call as a hub id, so the tests exercise the code path users run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock

from pipeline.architectures import ARCHITECTURES, FAMILIES, HUB_IDS, Family, build_random_pipeline
from pipeline.clip_tokenizer import write_clip_tokenizer
from pipeline.synthetic import synthetic_images

# Bump when the tiny builder changes, so stale caches are rebuilt instead of silently reused.
TINY_BUILD_VERSION = 1
TINY_SEED = 0
TINY_PREFIX = "tiny/"


def cache_root() -> Path:
    """Where built models live: $BDPO_CACHE, else ~/.cache/balanced_dpo."""
    return Path(os.environ.get("BDPO_CACHE", Path.home() / ".cache" / "balanced_dpo"))


def is_tiny(ref: str) -> bool:
    return ref.startswith(TINY_PREFIX)


def tiny_family(ref: str) -> Family:
    family = ref[len(TINY_PREFIX) :]
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model {ref!r}; choose one of {[TINY_PREFIX + f for f in FAMILIES]}")
    return family  # type: ignore[return-value]


def resolve_pretrained(ref: str) -> str:
    """A hub id or a local path is returned as is; `tiny/<family>` is built on first use and its path returned."""
    if is_tiny(ref):
        return str(ensure_tiny_pipeline(tiny_family(ref)))
    if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        path = Path(ref).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model directory not found: {path}")
        return str(path)
    return ref


def detect_family(ref: str, declared: str = "auto") -> Family:
    """The family of a model reference: declared, or read from its id / its UNet config."""
    if declared != "auto":
        return declared  # type: ignore[return-value]
    if is_tiny(ref):
        return tiny_family(ref)
    for family, hub_id in HUB_IDS.items():
        if ref == hub_id:
            return family
    unet_cfg = Path(resolve_pretrained(ref)) / "unet" / "config.json"
    if unet_cfg.is_file():
        import json

        cfg = json.loads(unet_cfg.read_text())
        if cfg.get("addition_embed_type") == "text_time":
            return "sdxl"
        sched = Path(resolve_pretrained(ref)) / "scheduler" / "scheduler_config.json"
        if sched.is_file() and json.loads(sched.read_text()).get("prediction_type") == "v_prediction":
            return "sd21"
        return "sd15"
    lowered = ref.lower()
    if "xl" in lowered:
        return "sdxl"
    if "2-1" in lowered or "2.1" in lowered or "sd21" in lowered:
        return "sd21"
    return "sd15"


def tiny_dir(family: Family) -> Path:
    return cache_root() / "models" / f"tiny-{family}-v{TINY_BUILD_VERSION}"


def ensure_tiny_pipeline(family: Family) -> Path:
    """Build and save the tiny `family` pipeline once (safe under concurrent callers), then return its path."""
    target = tiny_dir(family)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model_index.json").is_file():
            return target
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            build_tiny_pipeline(family, staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def make_tiny_pipeline(family: Family):
    """The tiny random-weight pipeline of `family`, in memory, reproducible from TINY_SEED."""
    from transformers import CLIPTokenizer

    arch = ARCHITECTURES[(family, "tiny")]
    tokenizers = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, pad in enumerate(arch.pad_tokens):
            tokenizers.append(
                CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tmp) / str(i), pad_token=pad))
            )
    pipe = build_random_pipeline(family, "tiny", tokenizers, seed=TINY_SEED)
    pipe.vae.register_to_config(scaling_factor=measured_latent_scale(pipe.vae))
    return pipe


def build_tiny_pipeline(family: Family, directory: Path):
    """Build the tiny pipeline of `family` and `save_pretrained` it into `directory`; returns the pipeline."""
    pipe = make_tiny_pipeline(family)
    pipe.save_pretrained(directory, safe_serialization=True)
    return pipe


@torch.no_grad()
def measured_latent_scale(vae, n: int = 64, seed: int = 1234) -> float:
    """1 / std of the VAE's latents on the synthetic set: the factor that makes latents unit-variance."""
    size = vae.config.sample_size
    images = torch.from_numpy(synthetic_images(n, size=size, seed=seed))
    latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std())
