"""Resolve a model reference to something `from_pretrained` loads: a hub id, a local directory, or `tiny/<family>`.

`tiny/<family>` names an embedded random-weight model of the real architecture. It is built once with a fixed seed,
saved with `save_pretrained` into a local cache (like a download), and from then on loaded back through the same
`from_pretrained(path)` call as a hub id, so the tests exercise the code path users run.

`tiny/<family>-pretrained` is the same model after a brief noise-prediction pre-training of its UNet on synthetic
images (`pipeline/models/pretrain.py`): the embedded default that DPO can actually improve. The random `tiny/<family>`
models stay what the tests use, because they build in seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from pipeline.io import build_once
from pipeline.models.architectures import ARCHITECTURES, FAMILIES, HUB_IDS, Family, build_random_pipeline
from pipeline.models.clip_tokenizer import write_clip_tokenizer
from pipeline.models.pretrain import PretrainSettings, pretrain_unet
from pipeline.models.synthetic import synthetic_images

# Bump when the tiny builder changes, so stale caches are rebuilt instead of silently reused.
TINY_BUILD_VERSION = 1
TINY_SEED = 0
TINY_PREFIX = "tiny/"
PRETRAINED_SUFFIX = "-pretrained"
# Bump when pipeline/models/pretrain.py changes what it trains, for the same reason (3: captions no longer depend on the
# process's hash seed; builds still differ with torch's thread count, see README).
PRETRAIN_VERSION = 3
PRETRAINED_FAMILIES: tuple[Family, ...] = ("sd15", "sd21")


def cache_root() -> Path:
    """Where built models live: $BDPO_CACHE, else ~/.cache/balanced_dpo."""
    return Path(os.environ.get("BDPO_CACHE", Path.home() / ".cache" / "balanced_dpo"))


def is_tiny(ref: str) -> bool:
    return ref.startswith(TINY_PREFIX)


def tiny_models() -> list[str]:
    """Every embedded model reference."""
    return [TINY_PREFIX + f for f in FAMILIES] + [
        TINY_PREFIX + f + PRETRAINED_SUFFIX for f in PRETRAINED_FAMILIES
    ]


def parse_tiny(ref: str) -> tuple[Family, bool]:
    """`tiny/sd15` → ("sd15", False); `tiny/sd15-pretrained` → ("sd15", True)."""
    if ref not in tiny_models():
        raise ValueError(f"unknown tiny model {ref!r}; choose one of {tiny_models()}")
    name = ref[len(TINY_PREFIX) :]
    pretrained = name.endswith(PRETRAINED_SUFFIX)
    family = name[: -len(PRETRAINED_SUFFIX)] if pretrained else name
    return family, pretrained  # type: ignore[return-value]


def tiny_family(ref: str) -> Family:
    return parse_tiny(ref)[0]


def resolve_pretrained(ref: str) -> str:
    """A hub id or a local path is returned as is; `tiny/<family>` is built on first use and its path returned."""
    if is_tiny(ref):
        family, pretrained = parse_tiny(ref)
        return str(ensure_tiny_pipeline(family, pretrained=pretrained))
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


def tiny_dir(family: Family, pretrained: bool = False) -> Path:
    name = f"tiny-{family}-v{TINY_BUILD_VERSION}"
    if pretrained:
        name += f"-pretrained-p{PRETRAIN_VERSION}"
    return cache_root() / "models" / name


def ensure_tiny_pipeline(family: Family, pretrained: bool = False) -> Path:
    """Build and save a tiny pipeline once (safe under concurrent callers), then return its path."""
    target = tiny_dir(family, pretrained)
    if pretrained:
        return build_once(
            target, lambda staging: build_pretrained_tiny_pipeline(family, staging), "model_index.json"
        )
    return build_once(target, lambda staging: build_tiny_pipeline(family, staging), "model_index.json")


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


def build_pretrained_tiny_pipeline(family: Family, directory: Path, settings: PretrainSettings | None = None):
    """Load the cached random tiny model, pre-train its UNet (`pipeline/models/pretrain.py`), save it into `directory`.

    The summary (losses, seconds, settings) is written beside the weights as `pretrain.json`.
    """
    from diffusers import DiffusionPipeline

    if family not in PRETRAINED_FAMILIES:
        raise ValueError(f"no pre-trained tiny model for {family!r}; choose one of {PRETRAINED_FAMILIES}")
    pipe = DiffusionPipeline.from_pretrained(ensure_tiny_pipeline(family))
    pipe.set_progress_bar_config(disable=True)
    summary = pretrain_unet(pipe, settings or PretrainSettings())
    pipe.save_pretrained(directory, safe_serialization=True)
    (Path(directory) / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return pipe


@torch.no_grad()
def measured_latent_scale(vae, n: int = 64, seed: int = 1234) -> float:
    """1 / std of the VAE's latents on the synthetic set: the factor that makes latents unit-variance."""
    size = vae.config.sample_size
    images = torch.from_numpy(synthetic_images(n, size=size, seed=seed))
    latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std())


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.models.zoo tiny/sd15-pretrained ...`: build embedded models now, print their paths."""
    import argparse
    import logging
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("refs", nargs="+", metavar="REF", help=f"one of {tiny_models()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for ref in args.refs:
        started = time.perf_counter()
        path = resolve_pretrained(ref)
        print(f"{ref}: {path} ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
