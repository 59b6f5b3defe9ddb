"""Candidates tables made up on the spot, for the vote's tests, benchmark and example notebook.

Stage 2 only needs ids and `score_*` columns; the images are tiny solid-colour PNGs (or one shared PNG at benchmark
sizes) so the tables conform to `candidates_schema` without running stage 1.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from PIL import Image

from pipeline.images import png_bytes
from pipeline.schema import SCORE_PREFIX, candidates_schema, make_image_id, make_prompt_id


def solid_png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A tiny one-colour PNG: every candidate gets an image without running a model."""
    return png_bytes(Image.new("RGB", (size, size), rgb))


def candidates_from_scores(
    prompts: list[str], scores: dict[str, np.ndarray], model: str = "synthetic", distinct_images: bool = True
) -> pa.Table:
    """A candidates table from a (n_prompts, n_candidates) score matrix per metric.

    Row order is prompt-major; candidate j of every prompt has seed j. With `distinct_images` every image gets
    its own colour (so a notebook can show them); otherwise one shared PNG keeps big tables small.
    """
    metrics = list(scores)
    n_prompts, n_cand = next(iter(scores.values())).shape
    for m, s in scores.items():
        if s.shape != (n_prompts, n_cand):
            raise ValueError(f"scores[{m!r}] has shape {s.shape}, expected {(n_prompts, n_cand)}")
    if len(prompts) != n_prompts:
        raise ValueError(f"{len(prompts)} prompts for {n_prompts} score rows")
    prompt_ids = [make_prompt_id(p) for p in prompts]
    seeds = np.tile(np.arange(n_cand, dtype=np.int64), n_prompts)
    pid_col = np.repeat(np.array(prompt_ids, dtype=object), n_cand)
    image_ids = [make_image_id(pid, model, int(s)) for pid, s in zip(pid_col, seeds, strict=True)]
    n = n_prompts * n_cand
    if distinct_images:
        images = [solid_png(((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)) for i in range(n)]
    else:
        shared = solid_png((128, 128, 128))
        images = [shared] * n
    columns = {
        "image_id": image_ids,
        "prompt_id": pid_col.tolist(),
        "prompt": np.repeat(np.array(prompts, dtype=object), n_cand).tolist(),
        "source": ["synthetic"] * n,
        "model": [model] * n,
        "round": np.zeros(n, np.int32),
        "seed": seeds,
        "height": np.full(n, 8, np.int32),
        "width": np.full(n, 8, np.int32),
        "num_inference_steps": np.full(n, 10, np.int32),
        "guidance_scale": np.full(n, 5.0, np.float32),
        "image": images,
        "latent": pa.nulls(n, pa.list_(pa.float32())),
        "latent_shape": pa.nulls(n, pa.list_(pa.int32())),
    }
    for m in metrics:
        columns[SCORE_PREFIX + m] = scores[m].reshape(-1).astype(np.float32)
    return pa.table(columns, schema=candidates_schema(metrics))


def random_candidates(
    n_prompts: int, n_candidates: int, metrics: list[str], seed: int = 0, distinct_images: bool = True
) -> pa.Table:
    """Random scores on each metric's own scale (as real metrics differ), correlated through a shared quality."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=(n_prompts, n_candidates))
    scales = [(0.25, 0.02), (20.0, 1.0), (5.0, 0.5), (0.0, 1.0), (0.3, 0.05)]
    scores = {}
    for k, m in enumerate(metrics):
        loc, scale = scales[k % len(scales)]
        noise = rng.normal(size=quality.shape)
        scores[m] = (loc + scale * (0.6 * quality + 0.8 * noise)).astype(np.float32)
    prompts = [f"prompt {i}" for i in range(n_prompts)]
    return candidates_from_scores(prompts, scores, distinct_images=distinct_images)


def bench_candidates(n_prompts: int, n_candidates: int, metrics: list[str], seed: int = 0) -> pl.DataFrame:
    """A large candidates-shaped frame built vectorised (no per-row sha1), for the benchmark only.

    Like stage 1's output where it matters to the vote's cost: ids are 16 hex characters that look random
    (`make_image_id` digests), rows come grouped by prompt in generation order, so neither prompt ids nor image
    ids are sorted; one short prompt text per prompt; no image bytes (the vote never reads them).
    """
    rng = np.random.default_rng(seed)
    n = n_prompts * n_candidates
    prompt_idx = np.repeat(np.arange(n_prompts, dtype=np.uint64), n_candidates)
    frame = pl.DataFrame(
        {
            "image_id": hex_ids(np.arange(n, dtype=np.uint64), salt=1),
            "prompt_id": hex_ids(prompt_idx, salt=2),
            "seed": np.tile(np.arange(n_candidates, dtype=np.int64), n_prompts),
            "prompt": pl.Series(prompt_idx).cast(pl.String),
        }
    ).with_columns(prompt=pl.lit("a prompt ") + pl.col("prompt"))
    return frame.with_columns(
        [pl.Series(SCORE_PREFIX + m, rng.normal(size=n).astype(np.float32)) for m in metrics]
    )


def hex_ids(values: np.ndarray, salt: int) -> pl.Series:
    """16 lowercase hex characters per value: a bijective 64-bit mix (splitmix64's finaliser) of value + salt."""
    x = values.astype(np.uint64) + np.uint64(salt * 0x9E3779B97F4A7C15 % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    nibbles = (x[:, None] >> (np.uint64(4) * np.arange(15, -1, -1, dtype=np.uint64))) & np.uint64(15)
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles]
    return pl.Series(chars.view("S16").ravel()).cast(pl.String)
