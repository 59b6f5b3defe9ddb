"""A small, real training set for tests and the benchmark: tiny-model candidates and pairs labelled by a rule.

Images are generated with `pipeline.models.diffusion.generate` on a `tiny/<family>` model and written with the project's
candidates schema; within each prompt every two images form a pair whose winner is the brighter image (one
"metric", so every vote is 1–0). The trainer cannot tell these from stage-1/stage-2 output.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from filelock import FileLock
from PIL import Image

from pipeline.config import GenerationSection, ModelSection
from pipeline.io import write_parquet_atomic
from pipeline.models.refs import cache_root
from pipeline.models.zoo import TINY_BUILD_VERSION
from pipeline.schema import (
    candidates_schema,
    make_image_id,
    make_pair_id,
    make_prompt_id,
    pairs_schema,
)

TOY_PROMPTS = (
    "a red circle on a blue background",
    "a green square",
    "a yellow triangle at night",
    "two white stripes",
)
TOY_GEN = GenerationSection(height=64, width=64, num_inference_steps=4, guidance_scale=5.0)


def brightness(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).mean())


def make_toy_run(
    run_dir: str | Path,
    model: str = "tiny/sd15",
    prompts: tuple[str, ...] = TOY_PROMPTS,
    seeds_per_prompt: int = 4,
    strategy: str = "majority",
    gen: GenerationSection = TOY_GEN,
    drop_latents: bool = False,
) -> tuple[Path, Path]:
    """Write `<run>/candidates/part-0.parquet` and `<run>/pairs/<strategy>/part-0.parquet`; return both dirs.

    `drop_latents=True` nulls the latent columns, as for an imported dataset (the trainer must VAE-encode).
    """
    from pipeline.models.diffusion import generate, load_pipeline

    run_dir = Path(run_dir)
    pipe = load_pipeline(ModelSection(pretrained=model), device="cpu")
    rows: list[dict] = []
    for prompt in prompts:
        seeds = list(range(seeds_per_prompt))
        out = generate(pipe, [prompt] * len(seeds), seeds, gen)
        pid = make_prompt_id(prompt)
        for seed, png, lat in zip(seeds, out.png, out.latents, strict=True):
            rows.append(
                {
                    "image_id": make_image_id(pid, model, seed),
                    "prompt_id": pid,
                    "prompt": prompt,
                    "source": "toy",
                    "model": model,
                    "round": 0,
                    "seed": seed,
                    "height": gen.height,
                    "width": gen.width,
                    "num_inference_steps": gen.num_inference_steps,
                    "guidance_scale": gen.guidance_scale,
                    "image": png,
                    "latent": None if drop_latents else lat.reshape(-1).tolist(),
                    "latent_shape": None if drop_latents else list(lat.shape),
                    "score_brightness": brightness(png),
                }
            )
    candidates_dir = run_dir / "candidates"
    write_parquet_atomic(
        pa.Table.from_pylist(rows, schema=candidates_schema(["brightness"])),
        candidates_dir / "part-0.parquet",
    )
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a["prompt_id"] != b["prompt_id"] or a["score_brightness"] == b["score_brightness"]:
                continue
            w, lo = (a, b) if a["score_brightness"] > b["score_brightness"] else (b, a)
            pairs.append(
                {
                    "pair_id": make_pair_id(w["image_id"], lo["image_id"]),
                    "prompt_id": w["prompt_id"],
                    "prompt": w["prompt"],
                    "image_id_w": w["image_id"],
                    "image_id_l": lo["image_id"],
                    "strategy": strategy,
                    "vote_brightness": 1,
                    "votes_w": 1,
                    "votes_l": 0,
                    "n_metrics": 1,
                    "confidence": 1.0,
                }
            )
    pairs_dir = run_dir / "pairs" / strategy
    write_parquet_atomic(
        pa.Table.from_pylist(pairs, schema=pairs_schema(["brightness"])), pairs_dir / "part-0.parquet"
    )
    return candidates_dir, pairs_dir


TOY_VERSION = 1


def cached_toy_run(family: str = "sd15", drop_latents: bool = False) -> Path:
    """A toy run built once into the model cache (like the tiny models); copy it before writing into it."""
    name = f"toy-{family}-{'png' if drop_latents else 'latent'}-v{TOY_VERSION}-m{TINY_BUILD_VERSION}"
    target = cache_root() / "toy_runs" / name
    if (target / "pairs").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "pairs").is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=name + ".", dir=target.parent))
        try:
            make_toy_run(staging, model=f"tiny/{family}", drop_latents=drop_latents)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def copy_toy_run(run_dir: str | Path, family: str = "sd15", drop_latents: bool = False) -> Path:
    """A fresh run directory holding the cached toy candidates and pairs."""
    run_dir = Path(run_dir)
    src = cached_toy_run(family, drop_latents)
    for sub in ("candidates", "pairs"):
        shutil.copytree(src / sub, run_dir / sub, dirs_exist_ok=True)
    return run_dir
