"""Images the trainer VAE-encodes itself (imported datasets such as Pick-a-Pic), brought to one training size.

Real Pick-a-Pic images come in many sizes; a batch of latents needs one. The rule is the reference trainers'
(Diffusion-DPO `train.py` and the diffusers DPO scripts): resize so the image covers the training size (for a
square size: the shorter side to it, bilinear), then crop to it (centre, or a random window), then optionally a
horizontal flip. The reference draws a new crop and flip each time it loads an image; here an image is encoded
once into the latents cache, so its crop and flip are drawn once, seeded by (train seed, image id).

Generated candidates carry their own latents and are used as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageRule:
    """The training size (height, width) and how an image is brought to it."""

    height: int
    width: int
    crop: Literal["center", "random"] = "center"
    hflip: bool = False
    seed: int = 0

    def key(self) -> str:
        """What the latents depend on, for the cache key."""
        return f"{self.height}x{self.width}|{self.crop}|hflip={self.hflip}|seed={self.seed}"


def _draws(rule: ImageRule, image_id: str) -> np.random.Generator:
    """A generator seeded by (seed, image id): the same image gets the same crop and flip in every run."""
    digest = hashlib.sha1(f"{rule.seed}\x1f{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def cover_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """(h, w) after the resize that makes the image cover the target: for a square target, the shorter side
    becomes the target and the longer one `int(target · long / short)`, as torchvision's `Resize(int)`."""
    scale = max(target_h / height, target_w / width)
    return max(target_h, int(height * scale)), max(target_w, int(width * scale))


def fit_image(image: Image.Image, rule: ImageRule, image_id: str) -> Image.Image:
    """Resize to cover the training size, crop to it, maybe mirror (see the module docstring)."""
    rng = _draws(rule, image_id)
    h, w = cover_size(image.height, image.width, rule.height, rule.width)
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    if rule.crop == "random":
        top = int(rng.integers(0, h - rule.height + 1))
        left = int(rng.integers(0, w - rule.width + 1))
    else:  # torchvision's CenterCrop
        top = round((h - rule.height) / 2.0)
        left = round((w - rule.width) / 2.0)
    flip = bool(rng.random() < 0.5)  # drawn always, so turning hflip on does not move the crop
    if (top, left, h, w) != (0, 0, rule.height, rule.width):
        image = image.crop((left, top, left + rule.width, top + rule.height))
    if rule.hflip and flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image
