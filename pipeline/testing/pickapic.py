"""A small pair table in the Pick-a-Pic v2 layout with the traits of the real dataset that matter downstream.

Real Pick-a-Pic rows (one human comparison each) have images of many sizes and aspect ratios (JPEG), captions
compared several times over different image pairs, ties (label 0.5 / 0.5), the same comparison repeated, and now
and then two users disagreeing on the same two images. This table has each of those, at sizes a tiny model
trains on in seconds. `PICKAPIC_LIKE_FACTS` states what a correct reader must find in it.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

CAPTIONS = ("a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen")
# (width, height): landscape, portrait, square and odd sizes, as Pick-a-Pic's generators produced them.
SIZES = ((40, 24), (24, 40), (32, 32), (56, 40))
IMAGES_PER_CAPTION = 4
# One row per comparison: (caption index, image k, image k', label_0).
COMPARISONS = (
    (0, 0, 1, 1.0),
    (0, 2, 3, 0.0),
    (0, 0, 2, 1.0),
    (0, 1, 3, 0.5),  # a tie
    (0, 0, 1, 1.0),  # the first comparison again, same verdict
    (1, 0, 1, 0.0),
    (1, 1, 2, 1.0),
    (1, 2, 1, 1.0),  # the same two images as the row above, the other verdict: a contradiction
    (1, 3, 0, 1.0),
    (2, 0, 3, 1.0),
    (2, 1, 2, 0.0),
)
PICKAPIC_LIKE_FACTS = {
    "rows": 11,
    "human_ties": 1,
    "given_repeated": 2,  # decided rows naming two images an earlier decided row named (either verdict)
    "distinct_decided_pairs": 8,  # the pairs `pairing: given` relabels
    "human_repeated": 1,  # decided rows repeating an earlier row's verdict
    "human_contradicted": 2,  # both directions of the one image pair that users labelled both ways
    "human_pairs_kept": 7,
    "all_pairs": 18,  # what `pairing: all` would form: 3 captions × C(4, 2)
}


def gradient_jpeg(width: int, height: int, seed: int) -> bytes:
    """A JPEG with a diagonal colour gradient: resizing and cropping it change its pixels visibly."""
    rng = np.random.default_rng(seed)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = (np.arange(height)[:, None] / max(height - 1, 1) + np.arange(width)[None, :] / max(width - 1, 1)) / 2
    pixels = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def pickapic_like_table() -> pa.Table:
    """The comparisons above as a Pick-a-Pic v2 table (caption, jpg_0/1, label_0/1, image uids, models)."""
    images = {
        (c, k): gradient_jpeg(*SIZES[(c + k) % len(SIZES)], seed=10 * c + k)
        for c in range(len(CAPTIONS))
        for k in range(IMAGES_PER_CAPTION)
    }
    cols: dict[str, list] = {
        k: [] for k in ("caption", "jpg_0", "jpg_1", "label_0", "label_1", "image_0_uid", "image_1_uid")
    }
    for c, k0, k1, label_0 in COMPARISONS:
        cols["caption"].append(CAPTIONS[c])
        cols["jpg_0"].append(images[(c, k0)])
        cols["jpg_1"].append(images[(c, k1)])
        cols["label_0"].append(label_0)
        cols["label_1"].append(1.0 - label_0)
        cols["image_0_uid"].append(f"c{c}-i{k0}")
        cols["image_1_uid"].append(f"c{c}-i{k1}")
    table = pa.table(cols)
    models = ["sdxl" if i % 2 else "sd15" for i in range(table.num_rows)]
    return table.append_column("model_0", pa.array(models)).append_column("model_1", pa.array(models[::-1]))
