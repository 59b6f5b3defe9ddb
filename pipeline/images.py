"""Images as the tables store them: PNG bytes in, RGB PIL images out (scorers and the report expect RGB)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG bytes of one image (the `image` column of the candidates contract)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def decode_images(encoded: Sequence[bytes]) -> list[Image.Image]:
    """PNG/JPEG bytes → RGB PIL images, fully decoded."""
    images = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as im:
            images.append(im.convert("RGB"))
    return images
