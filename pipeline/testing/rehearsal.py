"""Rehearse a shipped full-size config on a CPU: the config as shipped, with only what cannot run here replaced.

    python -m pipeline.testing.rehearsal configs/sd15.yaml [--out runs/rehearsal/sd15]

It prints the overrides, then runs prompts → stage 1 (local Ray) → vote → a few training steps and prints what
it found. `rehearsal_overrides(cfg)` is the one list of changes, each with why it is needed; everything else (the
vote and its metrics, β, the optimizer and weight decay, the learning-rate rule, batch size, gradient
checkpointing, prompt dropout, the dynamic reference's mode, the noise schedule's target) runs as shipped. The tests (`tests/testing/test_rehearsal.py`) rehearse every shipped
full-size config and check the report.

What a rehearsal cannot show: image quality, the real metrics' behaviour, GPU memory and speed, float16 numerics
(the CPU runs float32), multi-GPU gradient reduction (one process and 8 micro-batches here, so the effective
batch is 1 × 8 × 1, not the config's 1 × 128 × 16 = 2048), and anything about the hub weights themselves.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.config import RunConfig, derive_config, load_config
from pipeline.io import read_manifest
from pipeline.models.refs import TINY_PREFIX
from pipeline.models.zoo import detect_family
from pipeline.paths import RunPaths, table_files

# Small enough for ~40 s per config on two CPU cores, large enough that the four-metric vote keeps pairs.
PROMPTS = 3
CANDIDATES = 3
IMAGE_SIZE = 32
DENOISING_STEPS = 2
TRAIN_STEPS = 2
ACCUMULATION = 8


def rehearsal_overrides(cfg: RunConfig, out_dir: str | Path) -> list[tuple[str, str]]:
    """(`key=value` override, why) for every change from the shipped config; nothing else differs."""
    family = detect_family(cfg.model.pretrained, cfg.model.family)
    scorers = (
        "["
        + ", ".join(
            f"{{name: {s.name}, pretrained: tiny, batch_size: {s.batch_size}}}" for s in cfg.scoring.scorers
        )
        + "]"
    )
    changes = [
        (f"run.output_dir={out_dir}", "a scratch directory"),
        (
            f"model.pretrained={TINY_PREFIX}{family}",
            "hub weights → the tiny random-weight twin of the same family",
        ),
        *([("model.vae=null", "a hub VAE → the tiny model's own")] if cfg.model.vae is not None else []),
        (
            f"prompts={{manifest: data_manifests/tiny.yaml, limit: {PROMPTS}}}",
            "the hf:// prompt set is not reachable offline → a local prompt list",
        ),
        (f"generation.num_candidates={CANDIDATES}", "counts"),
        (f"generation.height={IMAGE_SIZE}", "image size"),
        (f"generation.width={IMAGE_SIZE}", "image size"),
        (f"generation.num_inference_steps={DENOISING_STEPS}", "steps"),
        (f"generation.batch_size={CANDIDATES}", "counts"),
        ("generation.num_workers=1", "one CPU actor instead of GPU workers"),
        ("generation.num_gpus=0", "no GPU"),
        (f"scoring.scorers={scorers}", "hub scorer weights → tiny random-weight scorers, same names"),
        ("scoring.num_workers=1", "one CPU actor"),
        (f"train.max_steps={TRAIN_STEPS}", "steps"),
        (
            f"train.gradient_accumulation_steps={ACCUMULATION}",
            "time: 128 micro-batches a step take minutes on a CPU; the scaling rule is checked with this value",
        ),
        ("train.lr_warmup_steps=0", "steps: a warm-up longer than the run would keep the rate near 0"),
        (f"train.checkpoint_every={TRAIN_STEPS}", "steps"),
        (f"train.ref_update.every={TRAIN_STEPS}", "steps: the dynamic reference refreshes once, at the end"),
        ("train.mixed_precision='no'", "fp16 autocast needs a GPU"),
    ]
    return changes


def rehearsal_config(path: str | Path, out_dir: str | Path, out: TextIO | None = sys.stdout) -> RunConfig:
    """The shipped config at `path` with `rehearsal_overrides` applied; the overrides are printed to `out`."""
    shipped = load_config(path)
    changes = rehearsal_overrides(shipped, out_dir)
    if out is not None:
        print(f"rehearsal of {path}: {len(changes)} overrides, everything else as shipped", file=out)
        for override, why in changes:
            print(f"  --set {override}    # {why}", file=out)
    return derive_config(shipped, [o for o, _ in changes])


@dataclass
class RehearsalReport:
    """What the rehearsal found, read back from the run directory."""

    cfg: RunConfig
    images: int
    latents_finite: bool
    images_finite: bool
    pairs_kept: int
    pairs_formed: int
    train_manifest: dict[str, Any]
    weight_change: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        m = self.train_manifest
        return [
            f"stage 1: {self.images} images, latents finite: {self.latents_finite}, images finite: "
            f"{self.images_finite}",
            f"vote: kept {self.pairs_kept} of {self.pairs_formed} pairs",
            f"train: {m['status']}, {m['step']} steps, target {m['prediction_type']}, effective batch "
            f"{m['effective_batch']}, learning rate {m['effective_learning_rate']:g}",
            f"prompt dropout: {m['prompt_dropout']['empty']} of {m['prompt_dropout']['prompts']} prompts empty "
            f"(rate {m['prompt_dropout']['rate']})",
            f"UNet weights moved: rms {self.weight_change['rms']:.3g} (relative {self.weight_change['relative']:.3g})",
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()),
        ]


def image_and_latent_finiteness(run_dir: Path) -> tuple[int, bool, bool]:
    """(rows, every latent finite, every decoded image a finite, non-empty picture) of the candidates table."""
    table = pq.read_table(table_files(RunPaths(run_dir).candidates), columns=["image", "latent"])
    latents = np.concatenate([np.asarray(v, np.float32) for v in table.column("latent").to_pylist()])
    images = [np.asarray(Image.open(io.BytesIO(b)), np.float32) for b in table.column("image").to_pylist()]
    return table.num_rows, bool(np.isfinite(latents).all()), all(np.isfinite(im).all() for im in images)


def weight_change(cfg: RunConfig, final_dir: Path) -> dict[str, float]:
    """How far training moved the UNet (full fine-tune) or its LoRA (from zero): rms and relative change."""
    import torch
    from diffusers import UNet2DConditionModel

    from pipeline.models.zoo import resolve_pretrained

    base = UNet2DConditionModel.from_pretrained(resolve_pretrained(cfg.model.pretrained), subfolder="unet")
    before = {k: v.float() for k, v in base.state_dict().items()}
    if cfg.train.use_lora:
        from safetensors.torch import load_file

        after = load_file(final_dir / "pytorch_lora_weights.safetensors")
        delta = torch.cat([v.float().flatten() for k, v in after.items() if "lora_B" in k])
        norm = torch.cat([v.float().flatten() for v in after.values()]).norm()
    else:
        tuned = UNet2DConditionModel.from_pretrained(final_dir / "unet").state_dict()
        delta = torch.cat([(tuned[k].float() - before[k]).flatten() for k in before])
        norm = torch.cat([v.flatten() for v in before.values()]).norm()
    return {"rms": float(delta.pow(2).mean().sqrt()), "relative": float(delta.norm() / norm)}


def run_rehearsal(path: str | Path, out_dir: str | Path, out: TextIO | None = sys.stdout) -> RehearsalReport:
    """Prompts → stage 1 → vote → training on the rehearsal config; returns (and prints) what was found."""
    from pipeline.stage1 import run_stage1
    from pipeline.voting import run_vote
    from trainer.recipe import train

    cfg = rehearsal_config(path, out_dir, out)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    run_stage1(cfg, progress=False)
    seconds["stage 1"] = time.perf_counter() - started
    pairs_dir = run_vote(cfg)
    seconds["vote"] = time.perf_counter() - started - seconds["stage 1"]
    trained = train(cfg)
    seconds["train"] = time.perf_counter() - started - seconds["stage 1"] - seconds["vote"]
    assert trained.final_dir is not None
    n, latents_ok, images_ok = image_and_latent_finiteness(cfg.output_dir)
    counts = read_manifest(pairs_dir)["counts"]
    report = RehearsalReport(
        cfg=cfg,
        images=n,
        latents_finite=latents_ok,
        images_finite=images_ok,
        pairs_kept=counts["pairs_kept"],
        pairs_formed=counts["pairs_formed"],
        train_manifest=read_manifest(trained.train_dir),
        weight_change=weight_change(cfg, trained.final_dir),
        seconds=seconds,
    )
    if out is not None:
        for line in report.lines():
            print(line, file=out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a shipped config, e.g. configs/sd15.yaml")
    parser.add_argument("--out", default=None, help="run directory (default runs/rehearsal/<config name>)")
    args = parser.parse_args(argv)
    out_dir = args.out or f"runs/rehearsal/{Path(args.config).stem}"
    run_rehearsal(args.config, out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
