"""A small Pick-a-Pic-layout table the project makes itself: rendered images and human labels from a hidden rule.

It stands in for Pick-a-Pic v2 where the hub cannot be reached, so the Diffusion-DPO baseline on *human* labels and
BalancedDPO's relabelling of the same pairs run end to end on the CPU (the tiny experiment, `make test`).

- Captions have the shape the tiny pre-trained model was trained on: "a red shape on a blue background", from the
  pre-training palette (`pipeline.models.synthetic.PALETTE`), so tuning on them moves generation for its prompts.
- Each caption gets `images_per_caption` images: a circle or square on a two-colour gradient. Colours are the
  caption's own, shifted a little, or, with probability `off_caption`, another palette colour; shape size and
  position vary.
- The hidden rule, the "human": a user prefers the image whose colours are closer to the caption (`faithfulness`:
  minus the RGB distances of the shape and background to the named colours) and, less, the brighter one:
  `appeal = faithfulness + brightness_weight × mean brightness`, chosen by a logistic model of the difference with
  temperature `label_noise`, so some labels go against the rule as real users' do. The tiny metrics (random-weight
  networks of the real architectures) know nothing of colours named in captions, but four of the five score
  brighter images higher, so they agree with the rule only in part. Measured on the default table's 288 training
  pairs against the scores of `configs/tiny_experiment.yaml`'s five metrics: their majority agrees with brightness
  alone on 85 % of the pairs and with faithfulness alone on 48 %; with `brightness_weight` 3 it agrees with the
  noise-free rule on 67 % (the experiment reports the agreement with the noisy labels it trains on).
- Rows are every pair of one caption's images (Pick-a-Pic repeats an image across the rows of its ranking), in
  the Pick-a-Pic v2 columns: `caption`, `jpg_0`, `jpg_1` (JPEG bytes), `label_0`, `label_1`, `image_0_uid`,
  `image_1_uid`, `model_0`, `model_1`, `best_image_uid`, `are_different`.

Train and test captions are disjoint (as Pick-a-Pic's splits are), both seeded: the same arguments give the same
images, labels and files on every machine.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.io import write_parquet_atomic, write_text_atomic
from pipeline.models.synthetic import PALETTE

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SyntheticPickapicSettings:
    """Every knob of the table; changing one changes the table (and its cache version)."""

    train_captions: int = 48
    test_captions: int = 16
    images_per_caption: int = 4
    size: int = 64
    off_caption: float = 0.35
    brightness_weight: float = 3.0
    label_noise: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (size, size, 3) uint8
    faithfulness: float

    def appeal(self, brightness_weight: float) -> float:
        """What the hidden user prefers: colours that match the caption, and (less) brightness."""
        return self.faithfulness + brightness_weight * float(self.image.mean()) / 255.0


def captions(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`n` distinct (shape colour, background colour) pairs from the palette, in a seeded order."""
    names = list(PALETTE)
    pairs = [(a, b) for a in names for b in names if a != b]
    if n > len(pairs):
        raise ValueError(f"at most {len(pairs)} distinct captions, asked for {n}")
    order = rng.permutation(len(pairs))[:n]
    return [pairs[i] for i in order]


def caption_text(shape: str, background: str) -> str:
    return f"a {shape} shape on a {background} background"


def _colour(name: str, rng: np.random.Generator, off_caption: float) -> np.ndarray:
    """The named colour shifted a little, or (off the caption) another palette colour."""
    if rng.random() < off_caption:
        name = str(rng.choice(list(PALETTE)))
    return np.clip(np.array(PALETTE[name]) + rng.normal(0, 0.06, 3), 0, 1)


def render(shape: str, background: str, size: int, rng: np.random.Generator, off_caption: float) -> Rendered:
    """One image for a caption, and how faithful to it its colours are (0 is perfect, lower is worse)."""
    fg, bg = _colour(shape, rng, off_caption), _colour(background, rng, off_caption)
    bg2 = np.clip(bg + rng.normal(0, 0.1, 3), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    angle = rng.uniform(0, np.pi)
    t = np.clip(np.cos(angle) * yy + np.sin(angle) * xx, 0, 1)[..., None]
    img = bg * (1 - t) + bg2 * t
    cy, cx = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.15, 0.3)
    if rng.random() < 0.5:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    else:
        mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    img = np.where(mask[..., None], fg, img)
    target_fg, target_bg = np.array(PALETTE[shape]), np.array(PALETTE[background])
    faithful = -float(np.linalg.norm(fg - target_fg) + np.linalg.norm((bg + bg2) / 2 - target_bg))
    return Rendered((img * 255).round().astype(np.uint8), faithful)


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def human_label(a: float, b: float, noise: float, rng: np.random.Generator) -> float:
    """1.0 when the user prefers image 0: a logistic choice on the difference of the two images' appeal."""
    p_first = 1.0 / (1.0 + np.exp(-(a - b) / noise))
    return float(rng.random() < p_first)


def split_table(pairs: list[tuple[str, str]], split: str, s: SyntheticPickapicSettings, rng) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in ("caption", "jpg_0", "jpg_1", "label_0", "label_1")}
    for k in ("image_0_uid", "image_1_uid", "model_0", "model_1", "best_image_uid", "are_different"):
        rows[k] = []
    for c, (shape, background) in enumerate(pairs):
        images = [render(shape, background, s.size, rng, s.off_caption) for _ in range(s.images_per_caption)]
        uids = [f"{split}-{c:03d}-{i}" for i in range(len(images))]
        for i, j in itertools.combinations(range(len(images)), 2):
            a, b = images[i].appeal(s.brightness_weight), images[j].appeal(s.brightness_weight)
            label = human_label(a, b, s.label_noise, rng)
            rows["caption"].append(caption_text(shape, background))
            rows["jpg_0"].append(jpeg(images[i].image))
            rows["jpg_1"].append(jpeg(images[j].image))
            rows["label_0"].append(label)
            rows["label_1"].append(1.0 - label)
            rows["image_0_uid"].append(uids[i])
            rows["image_1_uid"].append(uids[j])
            rows["model_0"].append("synthetic")
            rows["model_1"].append("synthetic")
            rows["best_image_uid"].append(uids[i] if label == 1.0 else uids[j])
            rows["are_different"].append(True)
    return pa.table(rows)


def write_synthetic_pickapic(
    directory: str | Path, settings: SyntheticPickapicSettings | None = None
) -> Path:
    """Write `<directory>/train.parquet`, `<directory>/test.parquet` and `settings.json`; returns the directory."""
    s = settings or SyntheticPickapicSettings()
    directory = Path(directory)
    rng = np.random.default_rng(s.seed)
    all_captions = captions(s.train_captions + s.test_captions, rng)
    split_captions = {"train": all_captions[: s.train_captions], "test": all_captions[s.train_captions :]}
    counts = {}
    for split in SPLITS:
        table = split_table(split_captions[split], split, s, rng)
        write_parquet_atomic(table, directory / f"{split}.parquet")
        counts[split] = {"rows": table.num_rows, "captions": len(split_captions[split])}
    write_text_atomic(
        directory / "settings.json", json.dumps({**asdict(s), "counts": counts}, indent=2) + "\n"
    )
    return directory
