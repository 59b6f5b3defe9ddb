"""A small synthetic image set the project makes itself: coloured shapes on gradient backgrounds.

It stands in for real photos where no data set can be downloaded: to measure a random VAE's latent scale and to
briefly pre-train the tiny UNet, so the embedded default generates images with structure instead of noise.
Each image's caption (`describe`) names the colour of its centre and of its background. Numpy only: the captions
are checked in fresh processes (their order once followed the hash seed), which need not import torch.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

# Named colours for captions, as RGB in [0, 1]; the nearest one names a colour.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.9, 0.15),
    "green": (0.15, 0.7, 0.2),
    "teal": (0.1, 0.6, 0.6),
    "blue": (0.15, 0.25, 0.85),
    "purple": (0.55, 0.2, 0.7),
    "pink": (0.95, 0.55, 0.75),
    "brown": (0.5, 0.3, 0.15),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.5, 0.5, 0.5),
    "black": (0.05, 0.05, 0.05),
}
_PALETTE_NAMES = list(PALETTE)
_PALETTE_RGB = np.array([PALETTE[n] for n in _PALETTE_NAMES], dtype=np.float32)


def synthetic_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """`n` RGB images as float32 in [-1, 1], shape (n, 3, size, size); the same `seed` gives the same images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        top, bottom = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        angle = rng.uniform(0, np.pi)
        t = np.clip(np.cos(angle) * yy + np.sin(angle) * xx, 0, 1)
        img = top[:, None, None] * (1 - t) + bottom[:, None, None] * t
        for _ in range(rng.integers(1, 4)):
            colour = rng.uniform(0, 1, 3)
            cy, cx = rng.uniform(0.2, 0.8, 2)
            r = rng.uniform(0.08, 0.3)
            if rng.random() < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.5, 1.5))
            img = np.where(mask[None], colour[:, None, None], img)
        out[i] = img * 2 - 1
    return out


def colour_name(rgb: np.ndarray) -> str:
    """The palette name nearest to one RGB colour given in [0, 1]."""
    distances = ((_PALETTE_RGB - np.asarray(rgb, dtype=np.float32)[None]) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(distances.argmin())]


def describe(image: np.ndarray) -> str:
    """A caption for one synthetic image (3, H, W) in [-1, 1]: the colour of its centre and of its corners."""
    rgb = (image + 1.0) / 2.0
    h, w = rgb.shape[1:]
    corners = np.stack([rgb[:, 0, 0], rgb[:, 0, w - 1], rgb[:, h - 1, 0], rgb[:, h - 1, w - 1]])
    centre = rgb[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(3, -1)
    # The centre's most common named colour is the shape more often than its mean would be.
    names = [colour_name(px) for px in centre[:, :: max(1, centre.shape[1] // 64)].T]
    # Ties go to the name sampled first: iterating a set of strings follows the per-process hash seed, which made
    # captions, and so the whole pre-trained model, differ from one build to the next.
    subject = Counter(names).most_common(1)[0][0]
    return f"a {subject} shape on a {colour_name(corners.mean(axis=0))} background"
