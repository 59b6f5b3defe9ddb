"""The table contracts between stages, defined once: candidates (one row per image) and pairs (one per pair).

Each stage reads only the tables of the stage before, so any stage can be rerun alone on cached data. The fixed
columns are declared here as pyarrow schemas; metric columns (`score_<metric>`, `vote_<metric>`) are added per run
from the configured scorers. docs/architecture.md's table contracts are written from these definitions.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import pyarrow as pa

SCORE_PREFIX = "score_"
VOTE_PREFIX = "vote_"

# One row per generated (or imported) image.
CANDIDATE_FIELDS: list[pa.Field] = [
    pa.field(
        "image_id", pa.string(), nullable=False
    ),  # make_image_id(prompt_id, model, seed): reruns idempotent
    pa.field("prompt_id", pa.string(), nullable=False),  # make_prompt_id(prompt)
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # prompt set (manifest name) or imported dataset
    pa.field("model", pa.string(), nullable=False),  # model reference that generated the image
    pa.field("round", pa.int32(), nullable=False),  # online round (0 for an offline run)
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("num_inference_steps", pa.int32(), nullable=False),
    pa.field("guidance_scale", pa.float32(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),  # PNG bytes
    # Final latent (already scaled by the VAE's scaling factor), flattened; null for imported images.
    pa.field("latent", pa.list_(pa.float32()), nullable=True),
    pa.field("latent_shape", pa.list_(pa.int32()), nullable=True),  # e.g. [4, 64, 64]
]

# One row per training pair of one strategy.
PAIR_FIELDS: list[pa.Field] = [
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("image_id_w", pa.string(), nullable=False),
    pa.field("image_id_l", pa.string(), nullable=False),
    pa.field("strategy", pa.string(), nullable=False),
    pa.field("votes_w", pa.int16(), nullable=False),
    pa.field("votes_l", pa.int16(), nullable=False),
    pa.field("n_metrics", pa.int16(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),
]

_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_metric_name(name: str) -> str:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"metric name {name!r} must be lowercase letters, digits and underscores")
    return name


def candidates_schema(metrics: list[str]) -> pa.Schema:
    """Fixed candidate columns followed by one float32 `score_<metric>` column per metric."""
    extra = [pa.field(SCORE_PREFIX + check_metric_name(m), pa.float32(), nullable=False) for m in metrics]
    return pa.schema(CANDIDATE_FIELDS + extra)


def pairs_schema(metrics: list[str]) -> pa.Schema:
    """Fixed pair columns with one int8 `vote_<metric>` column per metric (+1 prefers w, −1 prefers l, 0 tie)."""
    fixed = {f.name: f for f in PAIR_FIELDS}
    head = [fixed[n] for n in ("pair_id", "prompt_id", "prompt", "image_id_w", "image_id_l", "strategy")]
    votes = [pa.field(VOTE_PREFIX + check_metric_name(m), pa.int8(), nullable=False) for m in metrics]
    tail = [fixed[n] for n in ("votes_w", "votes_l", "n_metrics", "confidence")]
    return pa.schema(head + votes + tail)


def metric_columns(column_names: list[str], prefix: str = SCORE_PREFIX) -> list[str]:
    """Metric names present in a table, from its `score_*` (or `vote_*`) columns, in column order."""
    return [c[len(prefix) :] for c in column_names if c.startswith(prefix)]


def normalise_prompt(prompt: str) -> str:
    """Collapse whitespace and strip: the form that prompt ids and dedupe are computed on."""
    return " ".join(prompt.split())


def _digest(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:16]


def make_prompt_id(prompt: str) -> str:
    """Stable id of a prompt: the same text (up to whitespace) always gets the same id, on any machine."""
    return _digest("prompt", normalise_prompt(prompt))


SeedScheme = Literal["per_prompt", "shared"]


def noise_seed(prompt_id: str, index: int, scheme: SeedScheme = "per_prompt") -> int:
    """The generator seed of a prompt's image number `index` (`seed_offset + k` for its k-th image).

    `per_prompt`: a hash of (prompt, index), so every prompt starts from its own noise and the images of a run are
    independent draws; `shared`: `index` itself, the same starting noise for every prompt (a design where prompts
    are compared at fixed noise). Either way the seed is a pure function of the prompt and the index, so any image
    can be regenerated alone, and every model gets the same seed for the same item (paired comparisons).
    """
    if scheme == "shared":
        return int(index)
    digest = hashlib.blake2b(f"{prompt_id}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # below 2**63: fits the int64 `seed` column


def make_image_id(prompt_id: str, model: str, seed: int) -> str:
    """Stable id of a generated image: a rerun of the same (prompt, model, seed) writes the same id."""
    return _digest("image", prompt_id, model, int(seed))


# Pair ids are "<smaller image_id>~<larger image_id>": order-independent, collision-free, readable, and cheap to
# build as a vectorised string concatenation (a hash costs more than the whole vote at 45M pairs). The same two
# images have the same id under every strategy, so strategies (and human labels) compare by a join.
PAIR_ID_SEPARATOR = "~"


def make_pair_id(image_id_a: str, image_id_b: str) -> str:
    """The id of the pair of two images, in either order."""
    lo, hi = sorted((image_id_a, image_id_b))
    return f"{lo}{PAIR_ID_SEPARATOR}{hi}"
