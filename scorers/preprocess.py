"""Image preprocessing of each reference implementation, as pure functions of a PIL image (no model needed).

Kept apart from the models so that each one can be tested against its reference transform on its own. Two
families cover every metric here:

- `hps_pad_square`: HPSv2's evaluation transform: to tensor, resize so the longest side is `size` (bicubic,
  antialiased), zero-pad to a square, normalise. Not a centre crop: HPS sees the whole image.
- `clip_center_crop`: OpenAI CLIP's transform (also ImageReward's and the LAION aesthetic predictor's): resize the
  shortest side to `size` with PIL bicubic, centre-crop, to tensor, normalise.
"""

from __future__ import annotations

from collections.abc import Sequence

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
) -> torch.Tensor:
    """HPSv2 preprocessing of one RGB image → (3, size, size).

    The reference skips resizing and padding when the longest side already equals `size`; a non-square result
    could not be batched, so we always pad to a square (identical output for square images and for all others).
    """
    tensor = TF.to_tensor(image)
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
) -> torch.Tensor:
    """OpenAI CLIP preprocessing of one RGB image → (3, size, size)."""
    image = TF.resize(image, size, InterpolationMode.BICUBIC)
    image = TF.center_crop(image, [size, size])
    return TF.normalize(TF.to_tensor(image.convert("RGB")), list(mean), list(std))


def stack(
    images: Sequence[Image.Image], transform, device: torch.device, dtype: torch.dtype, **kw
) -> torch.Tensor:
    """Preprocess a batch and move it to the model's device and dtype in one copy."""
    return torch.stack([transform(im, **kw) for im in images]).to(device=device, dtype=dtype)
