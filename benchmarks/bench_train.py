"""Trainer benchmark: steps/s, pairs/s and peak memory; and proof that a step does only per-step work.

Default (tiny, CPU): the end-to-end `train()` on a cached toy run, one fresh process per variant (so peak RSS is
that variant's): LoRA vs full fine-tune, stored latents vs PNG→VAE, static vs dynamic (hard / EMA) reference.
Then a profile summary:
- module calls counted over two runs of S and 2S steps: the difference per step is what a step runs
  (expected: 2 UNet calls — reference and policy — and no VAE or text-encoder call); the rest is one-time work;
- the share of step time in each labelled phase (`dpo/*` profiler labels in trainer/step.py).

`--full-size` (GPU): `bench_steps(family, size="full", ...)` times the trainer's own `optimizer_step` on a
full-size random-weight UNet of pipeline/models/architectures.py with synthetic cached latents and text embeddings (a
training step never touches anything else). GPU check scripts call `bench_full_size(...)`, which returns numbers.

    python benchmarks/bench_train.py                      # tiny matrix + profile (CPU)
    python benchmarks/bench_train.py --full-size --family sdxl --lora --ref-mode hard --steps 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from pipeline.config import RunConfig, TrainSection

# The module classes whose calls the profile counts: the UNet and everything a step must NOT run.
COUNTED = (
    "UNet2DConditionModel",
    "Encoder",  # VAE encoder
    "Decoder",  # VAE decoder
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
)
PHASES = (
    "dpo/data",
    "dpo/reference_unet",
    "dpo/policy_unet",
    "dpo/backward",
    "dpo/optimizer",
    "dpo/refresh",
)


# --------------------------------------------------------------------------------------------- tiny end to end
def tiny_cfg(run: Path, use_lora: bool, ref_mode: str, steps: int, batch_size: int) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run": {"output_dir": str(run)},
            "model": {"pretrained": "tiny/sd15"},
            "train": {
                "use_lora": use_lora,
                "lora_rank": 8,
                "beta": 500.0,
                "learning_rate": 1e-3 if use_lora else 1e-4,
                "max_steps": steps,
                "batch_size": batch_size,
                "checkpoint_every": 10_000,
                "log_every": 10_000,
                "eval_pairs": 0,
                "tracker": "none",
                "ref_update": {"mode": ref_mode, "every": 5},
            },
        }
    )


def _tiny_variant(args: tuple[bool, str, bool, int, int]) -> dict[str, Any]:
    """One variant in a fresh process: prepare (cache build) and train; report timings and peak RSS."""
    use_lora, ref_mode, png, steps, batch_size = args
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from pipeline.testing.toy_run import copy_toy_run
    from trainer.recipe import train

    tmp = Path(tempfile.mkdtemp(prefix="bench_train."))
    try:
        run = copy_toy_run(tmp / "run", drop_latents=png)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = train(tiny_cfg(run, use_lora, ref_mode, steps, batch_size))
        timings = json.loads(out.manifest.read_text())["timings"]
        return {
            "method": "lora" if use_lora else "full",
            "reference": ref_mode,
            "input": "png→vae" if png else "latent",
            "prepare_s": timings["prepare_s"],
            "steps_per_s": timings["steps_per_s"],
            "pairs_per_s": timings["steps_per_s"] * batch_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss_before / 1024,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_matrix(steps: int, batch_size: int) -> list[dict[str, Any]]:
    from pipeline.testing.toy_run import cached_toy_run

    cached_toy_run("sd15", drop_latents=False)
    cached_toy_run("sd15", drop_latents=True)
    variants = [
        (False, "none", False),
        (False, "hard", False),
        (False, "ema", False),
        (True, "none", False),
        (True, "hard", False),
        (True, "ema", False),
        (False, "none", True),
        (True, "none", True),
    ]
    ctx = mp.get_context("spawn")
    rows = []
    for use_lora, ref_mode, png in variants:
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            rows.append(pool.apply(_tiny_variant, ((use_lora, ref_mode, png, steps, batch_size),)))
    return rows


class CallCounter:
    """Counts forward calls of the COUNTED module classes, process-wide (a global forward hook)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.handle = None

    def __enter__(self) -> CallCounter:
        def hook(module, _inputs, _output):
            name = type(module).__name__
            if name in COUNTED:
                self.counts[name] += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def tiny_profile(steps: int, batch_size: int) -> dict[str, Any]:
    """Module calls per step vs one-time (two runs, S and 2S steps, PNG input so the VAE has work), and phases."""
    from torch.profiler import ProfilerActivity, profile

    from pipeline.testing.toy_run import copy_toy_run
    from trainer.recipe import train

    counts = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_profile."))
    try:
        for i, s in enumerate((steps, 2 * steps)):
            run = copy_toy_run(tmp / f"run{i}", drop_latents=True)
            with CallCounter() as counter:
                train(tiny_cfg(run, False, "hard", s, batch_size))
            counts.append(counter.counts)
        per_step = {k: (counts[1][k] - counts[0][k]) / steps for k in COUNTED}
        one_time = {k: counts[0][k] - per_step[k] * steps for k in COUNTED}
        # Warm cache: a rerun on the same pairs encodes nothing at all.
        with CallCounter() as warm:
            cfg = tiny_cfg(tmp / "run0", False, "hard", steps, batch_size)
            cfg.train.resume = "never"
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train(cfg)
        phase_ms = {}
        for evt in prof.key_averages():
            if evt.key in PHASES:
                phase_ms[evt.key] = evt.cpu_time_total / 1000.0
        rerun = {k: warm.counts[k] for k in COUNTED}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "per_step_calls": per_step,
        "one_time_calls": one_time,
        "warm_rerun_calls": rerun,
        "phase_ms": phase_ms,
    }


# ------------------------------------------------------------------------------------ step benchmark (GPU)
def synthetic_data(family: str, size: str, num_pairs: int, seed: int = 0):
    """Cached-looking training data for a random-weight model: random latents and text embeddings."""
    from pipeline.models.architectures import ARCHITECTURES
    from trainer.data import TrainData

    arch = ARCHITECTURES[(family, size)]
    rng = np.random.default_rng(seed)
    side = arch.unet["sample_size"]
    latents = rng.standard_normal((2 * num_pairs, 4, side, side), dtype=np.float32)
    embeds = rng.standard_normal((num_pairs, 77, arch.unet["cross_attention_dim"]), dtype=np.float32)
    pooled = None
    if family == "sdxl":
        dim = arch.unet["projection_class_embeddings_input_dim"] - 6 * arch.unet["addition_time_embed_dim"]
        pooled = rng.standard_normal((num_pairs, dim), dtype=np.float32)
    px = side * 8
    return TrainData(
        latents=latents,
        sizes=np.full((2 * num_pairs, 2), px, dtype=np.int64),
        embeds=embeds,
        pooled=pooled,
        w_index=np.arange(0, 2 * num_pairs, 2),
        l_index=np.arange(1, 2 * num_pairs, 2),
        prompt_index=np.arange(num_pairs),
        confidence=np.ones(num_pairs, dtype=np.float32),
        cache_dir=Path("<memory>"),
    )


def bench_steps(
    family: str = "sd15",
    size: str = "tiny",
    use_lora: bool = True,
    ref_mode: str = "none",
    steps: int = 10,
    batch_size: int = 1,
    mixed_precision: str = "bf16",
    gradient_checkpointing: bool = False,
    warmup_steps: int = 2,
) -> dict[str, Any]:
    """Time the trainer's `optimizer_step` on a random-weight UNet of (family, size) with synthetic cached data.

    Returns steps/s, pairs/s, peak device memory (GB; CUDA only), trainable parameters and the setting.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from pipeline.models.architectures import ARCHITECTURES, build_unet, scheduler_for
    from trainer.policy import build_training
    from trainer.reference import should_refresh
    from trainer.step import StepContext, optimizer_step

    cuda = torch.cuda.is_available()
    if not cuda:
        mixed_precision = "no"
    tcfg = TrainSection(
        use_lora=use_lora,
        beta=5000.0,
        learning_rate=1e-5,
        max_steps=warmup_steps + steps,
        batch_size=batch_size,
        gradient_checkpointing=gradient_checkpointing,
        mixed_precision=mixed_precision,
        ref_update={"mode": ref_mode, "every": 1},
    )
    accelerator = Accelerator(mixed_precision=mixed_precision)
    try:
        arch = ARCHITECTURES[(family, size)]
        torch.manual_seed(0)
        unet = build_unet(arch)
        sched = scheduler_for(arch.prediction_type)
        data = synthetic_data(family, size, num_pairs=max(batch_size, 8))
        unet, reference, params, optimizer, lr_scheduler = build_training(unet, tcfg, accelerator.device)
        unet, optimizer = accelerator.prepare(unet, optimizer)
        ctx = StepContext(
            accelerator, unet, reference, optimizer, lr_scheduler, params, data, tcfg,
            sched.alphas_cumprod.to(accelerator.device), arch.prediction_type,
        )  # fmt: skip
        raw = accelerator.unwrap_model(unet)

        def one(step: int) -> None:
            optimizer_step(ctx, step)
            if should_refresh(step + 1, ref_mode, 1):
                reference.refresh(raw, ref_mode, 0.99)

        for i in range(warmup_steps):
            one(i)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(warmup_steps, warmup_steps + steps):
            one(i)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        return {
            **_state_sizes(raw, reference, optimizer),
            "family": family,
            "size": size,
            "method": "lora" if use_lora else "full",
            "reference": ref_mode,
            "batch_size": batch_size,
            "mixed_precision": mixed_precision,
            "gradient_checkpointing": gradient_checkpointing,
            "steps": steps,
            "steps_per_s": steps / elapsed,
            "pairs_per_s": steps * batch_size / elapsed,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "trainable_params_m": sum(p.numel() for p in params) / 1e6,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
        }
    finally:
        accelerator.free_memory()
        AcceleratorState._reset_state(reset_partial_state=True)
        if cuda:
            torch.cuda.empty_cache()


def _state_sizes(unet, reference, optimizer) -> dict[str, float]:
    """MB held by the training state: UNet weights (incl. adapters), a reference copy, optimizer moments."""

    def mb(tensors) -> float:
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20

    from trainer.reference import UNetReference

    opt_state = [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return {
        "unet_mb": mb(unet.parameters()),
        "reference_copy_mb": mb(reference.parameters()) if isinstance(reference, UNetReference) else 0.0,
        "adapter_reference_mb": 0.0 if isinstance(reference, UNetReference) else mb(reference.parameters()),
        "optimizer_state_mb": mb(opt_state),
    }


def bench_full_size(
    family: str = "sd15",
    use_lora: bool = True,
    ref_mode: str = "none",
    steps: int = 10,
    batch_size: int = 1,
    mixed_precision: str = "bf16",
    gradient_checkpointing: bool = True,
) -> dict[str, Any]:
    """Full-size random-weight UNet of `family` on the GPU: the GPU check script's entry point."""
    return bench_steps(
        family, "full", use_lora, ref_mode, steps, batch_size, mixed_precision, gradient_checkpointing
    )


# ------------------------------------------------------------------------------------------------ reporting
def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full-size", action="store_true", help="full-size UNet step benchmark (GPU)")
    parser.add_argument("--family", default="sd15", choices=["sd15", "sd21", "sdxl"])
    parser.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tune (--full-size)")
    parser.add_argument("--ref-mode", default="none", choices=["none", "hard", "ema"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.full_size:
        result: Any = bench_full_size(args.family, args.lora, args.ref_mode, args.steps, args.batch_size)
        print(_table([result], list(result)))
    else:
        rows = tiny_matrix(args.steps, args.batch_size)
        print(
            f"## tiny/sd15 on CPU: {args.steps} steps × {args.batch_size} pairs, 1 thread, fresh process each\n"
        )
        cols = ["method", "reference", "input", "prepare_s", "steps_per_s", "pairs_per_s", "peak_rss_mb"]
        print(_table(rows, cols))
        prof = tiny_profile(max(2, args.steps // 4), args.batch_size)
        print("\n## What a step runs (module calls; PNG input, hard reference)\n")
        calls = [
            {
                "module": k,
                "per step": prof["per_step_calls"][k],
                "one-time": prof["one_time_calls"][k],
                "warm rerun": prof["warm_rerun_calls"][k],
            }
            for k in COUNTED
        ]
        print(_table(calls, ["module", "per step", "one-time", "warm rerun"]))
        total = sum(prof["phase_ms"].values()) or 1.0
        phases = [
            {"phase": k, "ms": prof["phase_ms"].get(k, 0.0), "share": prof["phase_ms"].get(k, 0.0) / total}
            for k in PHASES
        ]
        print("\n## Where step time goes (torch.profiler, labelled phases)\n")
        print(_table(phases, ["phase", "ms", "share"]))
        steps_rows = [
            bench_steps("sd15", "tiny", lora, mode, args.steps, args.batch_size)
            for lora in (False, True)
            for mode in ("none", "hard", "ema")
        ]
        print("\n## Step benchmark, in process (tiny/sd15 random weights, reference refreshed every step)\n")
        cols = ["method", "reference", "steps_per_s", "pairs_per_s", "unet_mb", "reference_copy_mb"]
        print(_table(steps_rows, [*cols, "adapter_reference_mb", "optimizer_state_mb"]))
        result = {"tiny": rows, "profile": prof, "steps": steps_rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
