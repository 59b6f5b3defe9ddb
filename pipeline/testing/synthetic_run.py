"""A whole run directory of any size without a model, for the report's tests and benchmark.

Candidates come from `pipeline.testing.candidates` (made-up scores on each metric's own scale, one shared tiny PNG
or distinct colours); the pairs are the real vote (`run_vote`, diagnostics included); the training is a manifest
and a `metrics.jsonl` of made-up curves with the trainer's metric names and reference refreshes; the evaluation is
made-up base and tuned scores through the real pairing and win-rate code. Each part can be left out, as in a run
that has not got that far.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import RunConfig
from pipeline.io import write_manifest, write_parquet_atomic
from pipeline.paths import RunPaths, part_name
from pipeline.testing.candidates import random_candidates
from trainer.metrics_log import METRICS_FILE, append_metrics

METRICS = ["hpsv21", "clip", "pickscore", "aesthetic", "imagereward"]
ROWS_PER_PART = 250_000
IMAGE_POOL = 16


def noise_pngs(size: int, count: int = IMAGE_POOL, seed: int = 0) -> list[bytes]:
    """`count` PNGs of `size`² pixels: a colour gradient under strong noise, the hard case for a compressor."""
    from PIL import Image

    from pipeline.images import png_bytes

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    out = []
    for _ in range(count):
        base = np.stack(
            [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) / 2 + 128, np.full((size, size), 128.0)],
            -1,
        )
        noisy = np.clip(base * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 40, (size, size, 3)), 0, 255)
        out.append(png_bytes(Image.fromarray(noisy.astype(np.uint8))))
    return out


def with_images(table: pa.Table, pool: list[bytes] | None) -> pa.Table:
    """Row i gets `pool[i % len(pool)]` as its image (None: the table's own images)."""
    if not pool:
        return table
    column = pa.array([pool[i % len(pool)] for i in range(table.num_rows)], pa.binary())
    return table.set_column(table.schema.get_field_index("image"), "image", column)


def synthetic_config(
    root: Path, metrics: list[str], steps: int, refresh_every: int, candidates: int = 4
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run": {"name": "synthetic", "output_dir": str(root)},
            "model": {"pretrained": "tiny/sd15"},
            "generation": {"num_candidates": candidates},
            "scoring": {"scorers": [{"name": m} for m in metrics]},
            "train": {"max_steps": steps, "ref_update": {"mode": "hard", "every": refresh_every}},
            "eval": {"prompts": {"manifest": "data_manifests/tiny_eval.yaml"}, "seeds_per_prompt": 4},
        }
    )


def write_candidates(paths: RunPaths, table: pa.Table, cfg: RunConfig) -> None:
    for i, start in enumerate(range(0, table.num_rows, ROWS_PER_PART)):
        write_parquet_atomic(table.slice(start, ROWS_PER_PART), paths.candidates / part_name(i))
    write_manifest(
        paths.candidates,
        metrics=[s.name for s in cfg.scoring.scorers],
        n_rows=table.num_rows,
        n_errors=0,
        calls=[{"mode": "generate", "prompt_set": "synthetic", "wall_seconds": 0.0}],
        config=cfg.model_dump(mode="json"),
    )


def training_curves(steps: int, log_every: int, seed: int) -> list[tuple[int, dict[str, float]]]:
    """Made-up curves that look like a DPO run: the loss falls from log 2, accuracy rises from ½."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(log_every, steps + 1, log_every):
        progress = 1.0 - math.exp(-step / max(steps / 4, 1))
        noise = rng.normal(scale=0.02)
        out.append(
            (
                step,
                {
                    "loss": math.log(2) * (1 - 0.4 * progress) + noise,
                    "implicit_acc": 0.5 + 0.3 * progress + noise,
                    "reward_margin": 2.0 * progress + noise,
                    "winner_worse": 0.5 - 0.2 * progress + noise,
                    "policy_mse_w": 0.2 - 0.02 * progress,
                    "ref_mse_w": 0.2 - 0.015 * progress,
                    "lr": 1e-4,
                },
            )
        )
    return out


def write_training(paths: RunPaths, cfg: RunConfig, num_pairs: int) -> None:
    train_dir = paths.train(cfg.train.strategy)
    steps, every = cfg.train.max_steps, cfg.train.ref_update.every
    for step, metrics in training_curves(steps, cfg.train.log_every, cfg.run.seed):
        append_metrics(train_dir / "logs" / METRICS_FILE, step, metrics)
    write_manifest(
        train_dir,
        stage="train",
        status="finished",
        config=cfg.model_dump(mode="json"),
        family="sd15",
        num_pairs=num_pairs,
        step=steps,
        global_batch=cfg.train.batch_size,
        reference_refreshes=list(range(every, steps + 1, every)),
        timings={"prepare_s": 0.0, "train_s": 0.0},
    )


def write_evaluation(
    paths: RunPaths, cfg: RunConfig, n_items: int, runs: list[str], seed: int, pool: list[bytes] | None = None
) -> None:
    """Base and tuned images of `n_items` items (one shared PNG, or `pool`), scored at random, through the real
    statistics."""
    from pipeline.evaluation import tables
    from pipeline.evaluation.compare import group_rates, paired, rates_frame

    metrics = [s.name for s in cfg.scoring.scorers]
    n_prompts = max(1, n_items // cfg.eval.seeds_per_prompt)
    models = ["base:tiny/sd15", *(f"tuned:{r}" for r in runs)]
    frames = []
    for k, model in enumerate(models):
        table = random_candidates(
            n_prompts, cfg.eval.seeds_per_prompt, metrics, seed=seed + k, distinct_images=False
        )
        frame = pl.from_arrow(with_images(table, pool))
        assert isinstance(frame, pl.DataFrame)
        frames.append(
            frame.with_columns(pl.lit(model).alias("model"), (pl.col("image_id") + f"-{k}").alias("image_id"))
        )
    eval_dir = paths.eval
    candidates = pl.concat(frames)
    write_parquet_atomic(candidates.to_arrow(), eval_dir / "candidates" / part_name(0))
    write_manifest(eval_dir / "candidates", n_rows=candidates.height, metrics=metrics)
    scores = ["prompt_id", "prompt", "seed", "image_id", *[f"score_{m}" for m in metrics]]
    base = frames[0].select(scores)
    membership = pl.DataFrame({"group": "synthetic", "prompt_id": base["prompt_id"].unique()})
    per_image, labelled = [], []
    for k, run in enumerate(runs, start=1):
        rows = paired(base, frames[k].select(scores), run, metrics)
        per_image.append(rows.with_columns(pl.lit("base").alias("baseline")))
        labelled += group_rates(rows, membership, metrics, cfg, seed=seed)
    tables.write_parquet(eval_dir / "winrates.parquet", rates_frame(labelled, "base", []))
    tables.write_parquet(eval_dir / "per_image.parquet", pl.concat(per_image))
    write_manifest(
        eval_dir,
        config=cfg.model_dump(mode="json"),
        baseline={"name": "base", "model": models[0]},
        models={r: {"name": r} for r in runs},
        metrics=metrics,
        n_items={r: int(p.height) for r, p in zip(runs, per_image, strict=True)},
        wall_seconds=0.0,
    )


def make_synthetic_run(
    root: str | Path,
    n_prompts: int,
    n_candidates: int,
    *,
    metrics: list[str] = METRICS,
    vote: bool = True,
    train_steps: int | None = 300,
    eval_items: int | None = 64,
    distinct_images: bool = True,
    image_px: int | None = None,
    seed: int = 0,
) -> RunConfig:
    """Write the run's parts under `root` (None / False leaves a part out); returns the run's configuration.

    `image_px`: every image is one of 16 noisy PNGs of that size (as large as a real model's) instead of a tiny
    one; mind the table's size (a 512² noisy PNG is ≈ 0.6 MB).
    """
    from pipeline.voting import run_vote

    root = Path(root)
    paths = RunPaths(root)
    cfg = synthetic_config(root, metrics, train_steps or 1, refresh_every=50, candidates=n_candidates)
    pool = noise_pngs(image_px, seed=seed) if image_px else None
    table = random_candidates(n_prompts, n_candidates, metrics, seed=seed, distinct_images=distinct_images)
    write_candidates(paths, with_images(table, pool), cfg)
    if not vote:
        return cfg
    pairs_dir = run_vote(cfg)
    num_pairs = pl.scan_parquet(pairs_dir / "part-*.parquet").select(pl.len()).collect().item()
    if train_steps:
        write_training(paths, cfg, num_pairs)
    if eval_items:
        write_evaluation(paths, cfg, eval_items, ["majority"], seed, pool)
    return cfg
