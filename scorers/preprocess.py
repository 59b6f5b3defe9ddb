"""Image preprocessing of each reference implementation, as pure functions of a PIL image (no model needed).

Kept apart from the models so that each one can be tested against its reference transform on its own. Two
families cover every metric here:

- `hps_pad_square`: HPSv2's evaluation transform: to tensor, resize so the longest side is `size` (bicubic,
  antialiased), zero-pad to a square, normalise. Not a centre crop: HPS sees the whole image.
- `clip_center_crop`: OpenAI CLIP's transform (also ImageReward's and the LAION aesthetic predictor's): resize the
  shortest side to `size` with PIL bicubic, centre-crop, to tensor, normalise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def hps_pad_square(
    image: Image.Image,
    size: int = 224,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    device: torch.device | None = None,
) -> torch.Tensor:
    """HPSv2 preprocessing of one RGB image → (3, size, size), computed on `device` (the model's: on a GPU the
    antialiased resize of a large image is much cheaper there than on the CPU).

    The reference skips resizing and padding when the longest side already equals `size`; a non-square result
    could not be batched, so we always pad to a square (identical output for square images and for all others).
    """
    # to_tensor's exact arithmetic (uint8 → float / 255), but after the cheap uint8 copy to the device.
    tensor = TF.pil_to_tensor(image).to(device or "cpu").float().div(255)
    height, width = tensor.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_h, new_w = (round(dim * scale) for dim in (height, width))
        tensor = TF.resize(tensor, [new_h, new_w], InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - tensor.shape[1], size - tensor.shape[2]
    if pad_h or pad_w:
        tensor = TF.pad(tensor, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(tensor, list(mean), list(std))


def clip_center_crop(
    image: Image.Image,
    size: int = 224,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    device: torch.device | None = None,
) -> torch.Tensor:
    """OpenAI CLIP preprocessing of one RGB image → (3, size, size). The resize stays in PIL (uint8, as the
    reference rounds); only the small cropped result moves to `device`."""
    image = TF.resize(image, size, InterpolationMode.BICUBIC)
    image = TF.center_crop(image, [size, size])
    tensor = TF.pil_to_tensor(image.convert("RGB")).to(device or "cpu").float().div(255)
    return TF.normalize(tensor, list(mean), list(std))


def _workers() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(4, os.cpu_count() or 1))


_POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="preprocess")


def stack(
    images: Sequence[Image.Image], transform, device: torch.device, dtype: torch.dtype, **kw
) -> torch.Tensor:
    """Preprocess a batch on a few threads (PIL and torch release the GIL) and stack it on the model's device."""

    def one(image: Image.Image) -> torch.Tensor:
        return transform(image, device=device, **kw)

    tensors = list(_POOL.map(one, images)) if len(images) > 1 else [one(images[0])]
    return torch.stack(tensors).to(dtype=dtype)
