"""Comparisons of float outputs that different code paths compute, with tolerances derived from the operation.

Bit-identical floats are guaranteed only for the same process, inputs and code path. Two module instances holding
the same weights (a built and a reloaded model), or one batched and one single call, may take other SIMD kernels
(alignment, blocking) and round differently: on an AMD EPYC a reloaded tiny SDXL gave final latents 1.8e-5 apart
(of 15.6) and a batched VAE encode differed from single encodes by 1.2e-5. Those differences are a few float32
ulps per operation, accumulated over the network and the sampler's steps.

- Latents, embeddings and scores: compared relative to their scale (the largest magnitude), at 1e-4 of it: 10×
  the largest difference seen, still far below any real change of weights (a LoRA step moves latents by 1e-2).
- Decoded 8-bit images: a latent difference that small moves a pixel across a rounding boundary at most,
  so pixel values may differ by 1 (2 allowed), and only in a small share of pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

LATENT_RTOL = 1e-4
PIXEL_ATOL = 2
PIXEL_SHARE = 0.01


def assert_close_at_scale(actual, expected, rtol: float = LATENT_RTOL) -> None:
    """Equal up to `rtol` of the expected values' largest magnitude (plus a floor for all-zero arrays)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    scale = max(float(np.abs(e).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_images_close(actual: list[bytes], expected: list[bytes]) -> None:
    """Same number and size of images; pixel values within `PIXEL_ATOL`, at most `PIXEL_SHARE` of them differing."""
    assert len(actual) == len(expected), f"{len(actual)} images vs {len(expected)}"
    for i, (a_png, e_png) in enumerate(zip(actual, expected, strict=True)):
        a, e = decode_png(a_png), decode_png(e_png)
        assert a.shape == e.shape, f"image {i}: size {a.shape} vs {e.shape}"
        diff = np.abs(a - e)
        assert diff.max() <= PIXEL_ATOL, f"image {i}: a pixel value differs by {diff.max()}"
        share = float((diff > 0).mean())
        assert share <= PIXEL_SHARE, f"image {i}: {share:.2%} of pixel values differ"
