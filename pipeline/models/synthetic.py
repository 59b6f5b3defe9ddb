"""A small synthetic image set the project makes itself: coloured shapes on gradient backgrounds.

It stands in for real photos where no data set can be downloaded: to measure a random VAE's latent scale and to
briefly pre-train the tiny UNet, so the embedded default generates images with structure instead of noise.
"""

from __future__ import annotations

import numpy as np


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
