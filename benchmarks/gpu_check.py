"""One prepared check of the full-size system on one GPU: generation, scoring and training, in one run.

    python benchmarks/gpu_check.py OUT_DIR                  # full-size, one NVIDIA GPU, no network (< 8 min)
    python benchmarks/gpu_check.py OUT_DIR --tiny           # the same code path on the CPU with tiny models (CI)

Full-size architectures with random weights cost the same compute as the real models, so they measure real
throughput and memory without the hub. It measures, side by side in the same run:
- generation with the full-size SD1.5 architecture at 512×512 in fp16, through the stage-1 Ray job
  (`pipeline.stage1.run_stage1`, no scorers) and through a plain diffusers loop on the same saved model: images/s of
  each and their ratio;
- every full-size scorer (`pretrained: random-full`): images/s at the best of several batch sizes;
- Diffusion-DPO optimizer steps on stored latents (`benchmarks/bench_train.bench_steps`): LoRA and full fine-tune,
  with and without the dynamic reference (a hard refresh every step, the worst case), SD1.5 at 512 and SDXL at 1024.
Each section runs inside a time budget; what could not run (out of memory, out of time) is recorded, not hidden.
Results: `OUT_DIR/gpu_check.json` and `OUT_DIR/gpu_check.md`.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PROMPTS = [
    "a lighthouse on a rocky shore at dusk",
    "an astronaut riding a horse on mars",
    "a bowl of lemons on a wooden table",
    "a watercolor painting of a fox in the snow",
]
SCORERS = ["hpsv2", "hpsv21", "clip", "pickscore", "aesthetic", "imagereward"]


@dataclass(frozen=True)
class Plan:
    """What one run measures; `full()` is the GPU check, `tiny()` the same code path sized for a CPU."""

    size: str
    gen_family: str
    gen_px: int
    gen_steps: int
    gen_batch: int
    gen_images: int
    score_px: int
    score_images: int
    score_batches: tuple[int, ...]
    train_steps: int
    train_batch: int
    train_cases: tuple[tuple[str, bool, str], ...]  # (family, lora, reference mode)

    @staticmethod
    def full() -> Plan:
        cases = tuple(
            (family, lora, ref)
            for family in ("sd15", "sdxl")
            for lora in (True, False)
            for ref in ("none", "hard")
        )
        return Plan("full", "sd15", 512, 20, 8, 24, 512, 128, (16, 32, 64), 4, 4, cases)

    @staticmethod
    def tiny() -> Plan:
        cases = (
            ("sd15", True, "none"),
            ("sd15", True, "hard"),
            ("sd15", False, "hard"),
            ("sdxl", True, "hard"),
        )
        return Plan("tiny", "sd15", 64, 4, 4, 8, 64, 16, (4, 16), 2, 2, cases)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def environment() -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": "cpu",
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


# ----------------------------------------------------------------------------------------------------- generation
def save_generation_model(plan: Plan, work: Path) -> str:
    """The model both generation paths load: full-size random SD1.5 saved as a diffusers directory, or tiny/sd15."""
    if plan.size == "tiny":
        return f"tiny/{plan.gen_family}"
    import torch
    from transformers import CLIPTokenizer

    from pipeline.models.architectures import build_random_pipeline
    from pipeline.models.clip_tokenizer import write_clip_tokenizer

    target = work / f"{plan.gen_family}-full-random"
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(work / "tokenizer"))
    with torch.device("cuda"):
        pipe = build_random_pipeline(plan.gen_family, "full", [tok], seed=0, dtype=torch.float16)
    pipe.save_pretrained(target, safe_serialization=True)
    del pipe
    _free()
    return str(target)


def plain_loop(model_ref: str, plan: Plan) -> dict[str, Any]:
    """The baseline: one process, the diffusers pipeline called batch after batch, PIL images out."""
    import torch

    from pipeline.config import ModelSection
    from pipeline.models.diffusion import load_pipeline

    pipe = load_pipeline(ModelSection(pretrained=model_ref, dtype="float16"))
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(plan.gen_images)]

    def run_batch(pipe: Any, batch_prompts: list[str], first_seed: int) -> None:
        gens = [torch.Generator(pipe.device).manual_seed(first_seed + i) for i in range(len(batch_prompts))]
        pipe(
            prompt=batch_prompts,
            height=plan.gen_px,
            width=plan.gen_px,
            num_inference_steps=plan.gen_steps,
            generator=gens,
        )

    run_batch(pipe, prompts[: plan.gen_batch], 10_000)  # warm-up: kernels, allocator
    _sync()
    t0 = time.perf_counter()
    for start in range(0, len(prompts), plan.gen_batch):
        run_batch(pipe, prompts[start : start + plan.gen_batch], start)
    _sync()
    elapsed = time.perf_counter() - t0
    peak = _peak_gb()
    del pipe
    _free()
    return {
        "images": len(prompts),
        "seconds": round(elapsed, 2),
        "images_per_s": len(prompts) / elapsed,
        "peak_gb": peak,
    }


def ray_job(model_ref: str, plan: Plan, work: Path) -> dict[str, Any]:
    """The stage-1 Ray job on the same model: one generation actor holding the GPU, no scorers."""
    from pipeline.config import RunConfig
    from pipeline.io import read_manifest
    from pipeline.stage1 import run_stage1

    cuda = _cuda()
    cfg = RunConfig.model_validate(
        {
            "run": {"output_dir": str(work / "stage1")},
            "model": {"pretrained": model_ref, "family": plan.gen_family, "dtype": "float16"},
            "generation": {
                "num_candidates": plan.gen_images // len(PROMPTS),
                "height": plan.gen_px,
                "width": plan.gen_px,
                "num_inference_steps": plan.gen_steps,
                "batch_size": plan.gen_batch,
                "num_workers": 1,
                "num_gpus": 1 if cuda else 0,
            },
            "scoring": {"scorers": []},
        }
    )
    t0 = time.perf_counter()
    out = run_stage1(cfg, prompts=PROMPTS, progress=False)
    wall = time.perf_counter() - t0
    call = read_manifest(out.candidates_dir)
    call = call.get("calls", [call])[-1] if isinstance(call.get("calls"), list) else call
    return {
        "images": out.n_rows,
        "wall_seconds": round(wall, 2),
        "images_per_s_wall": out.n_rows / wall,
        # Time inside the actor's generate calls (model loaded, first batch included): the job's own cost per image
        # without Ray's start-up, comparable to the warm plain loop.
        "images_per_s_in_actor": _find(call, "generation_images_per_second_per_actor"),
    }


def _find(record: Any, key: str) -> Any:
    """A key anywhere in a nested manifest (stage 1 nests its per-call record)."""
    if isinstance(record, dict):
        if key in record:
            return record[key]
        for value in record.values():
            found = _find(value, key)
            if found is not None:
                return found
    if isinstance(record, list):
        for value in reversed(record):
            found = _find(value, key)
            if found is not None:
                return found
    return None


def generation(plan: Plan, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    model_ref = save_generation_model(plan, work)
    build_s = time.perf_counter() - t0
    plain = plain_loop(model_ref, plan)
    ray = ray_job(model_ref, plan, work)
    in_actor = ray["images_per_s_in_actor"] or ray["images_per_s_wall"]
    return {
        "model": f"{plan.gen_family} {plan.size} (random weights), {plan.gen_px}×{plan.gen_px}, "
        f"{plan.gen_steps} steps, batch {plan.gen_batch}" + (", fp16" if _cuda() else ", fp32 on CPU"),
        "build_and_save_s": round(build_s, 1),
        "plain_loop": plain,
        "ray_job": ray,
        "ray_over_plain_in_actor": in_actor / plain["images_per_s"],
        "ray_over_plain_wall": ray["images_per_s_wall"] / plain["images_per_s"],
    }


# ----------------------------------------------------------------------------------------------------- scoring
def scoring(plan: Plan, deadline: float) -> list[dict[str, Any]]:
    from bench_scorers import _images, _timed

    from pipeline.config import ScorerSpec
    from scorers import build_scorer

    images = _images(plan.score_images, plan.score_px)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]
    weights = "random-full" if plan.size == "full" else "tiny"
    rows = []
    for name in SCORERS:
        if time.time() > deadline:
            rows.append({"scorer": name, "error": "skipped: time budget"})
            continue
        row: dict[str, Any] = {"scorer": name, "weights": weights}
        try:
            t0 = time.perf_counter()
            scorer = build_scorer(
                ScorerSpec(name=name, pretrained=weights, batch_size=max(plan.score_batches))
            )
            row["build_s"] = round(time.perf_counter() - t0, 1)
            row["dtype"] = str(getattr(scorer, "dtype", "")).removeprefix("torch.")
            scorer(images[:4], prompts[:4])
            _free()
            rates = {}
            for batch in plan.score_batches:
                scorer.spec = scorer.spec.model_copy(update={"batch_size": batch})
                rates[batch] = _timed(scorer, images, prompts, batched=True, repeats=2)
            best = max(rates, key=rates.get)
            row.update(images_per_s=rates[best], best_batch=best, by_batch=rates, peak_gb=_peak_gb())
            del scorer
        except Exception as exc:  # one scorer's failure must not hide the others' numbers
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        _free()
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------- training
def training(plan: Plan, deadline: float) -> list[dict[str, Any]]:
    from bench_train import bench_steps

    rows = []
    for family, lora, ref in plan.train_cases:
        case = {"family": family, "method": "lora" if lora else "full", "reference": ref}
        if time.time() > deadline:
            rows.append({**case, "error": "skipped: time budget"})
            continue
        batch = plan.train_batch if family == "sd15" else 1
        try:
            result = bench_steps(
                family=family,
                size=plan.size,
                use_lora=lora,
                ref_mode=ref,
                steps=plan.train_steps,
                batch_size=batch,
                mixed_precision="bf16",
                gradient_checkpointing=plan.size == "full" and family == "sdxl",
            )
            rows.append({**case, **result})
        except Exception as exc:
            rows.append(
                {**case, "batch_size": batch, "error": "out of memory" if _oom(exc) else repr(exc)[:300]}
            )
        _free()
    return rows


# ----------------------------------------------------------------------------------------------------- report
def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# GPU check: {env['device']}",
        "",
        f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}; "
        f"mode `{report['mode']}`; total {report['total_seconds']:.0f} s.",
        "",
    ]
    gen = report.get("generation")
    if isinstance(gen, dict) and "plain_loop" in gen:
        p, r = gen["plain_loop"], gen["ray_job"]
        lines += [
            "## Generation",
            "",
            gen["model"],
            "",
            "| path | images | images/s | peak GB |",
            "|---|---|---|---|",
            f"| plain diffusers loop (warm) | {p['images']} | {_fmt(p['images_per_s'])} | {_fmt(p['peak_gb'])} |",
            f"| stage-1 Ray job, inside the generation actor | {r['images']} | {_fmt(r['images_per_s_in_actor'])} | – |",
            f"| stage-1 Ray job, wall incl. Ray start + model load | {r['images']} | "
            f"{_fmt(r['images_per_s_wall'])} | – |",
            "",
            f"Ray / plain: inside the actor {_fmt(gen['ray_over_plain_in_actor'])}, "
            f"wall {_fmt(gen['ray_over_plain_wall'])} (wall includes Ray start-up and the model load).",
            "",
        ]
    elif gen is not None:
        lines += ["## Generation", "", f"failed: {gen}", ""]
    if report.get("scoring"):
        lines += [
            "## Scoring",
            "",
            "| scorer | weights | best batch | images/s | peak GB |",
            "|---|---|---|---|---|",
        ]
        for row in report["scoring"]:
            if "error" in row:
                lines.append(f"| {row['scorer']} | – | – | {row['error']} | – |")
            else:
                lines.append(
                    f"| {row['scorer']} | {row['weights']} ({row['dtype']}) | {row['best_batch']} | "
                    f"{_fmt(row['images_per_s'], 1)} | {_fmt(row['peak_gb'])} |"
                )
        lines.append("")
    if report.get("training"):
        lines += [
            "## Diffusion-DPO training steps (stored latents, bf16 autocast)",
            "",
            "| family | method | reference | batch (pairs) | steps/s | pairs/s | peak GB |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in report["training"]:
            head = (
                f"| {row['family']} | {row['method']} | {row['reference']} | {row.get('batch_size', '–')} |"
            )
            if "error" in row:
                lines.append(f"{head} {row['error']} | – | – |")
            else:
                lines.append(
                    f"{head} {_fmt(row['steps_per_s'])} | {_fmt(row['pairs_per_s'])} | {_fmt(row['peak_mem_gb'])} |"
                )
        lines.append("")
    return "\n".join(lines)


def run_section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as exc:
        traceback.print_exc()
        report[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"[gpu_check] {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    _free()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path, help="where gpu_check.json and gpu_check.md are written")
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (the CI smoke run)")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new measurements after this"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch space for the saved model (large)"
    )
    parser.add_argument("--only", nargs="+", choices=["generation", "scoring", "training"], default=None)
    args = parser.parse_args(argv)

    if not args.tiny and not _cuda():
        parser.error("no CUDA device: run on a GPU, or pass --tiny for the CPU smoke run")
    plan = Plan.tiny() if args.tiny else Plan.full()
    started = time.time()
    deadline = started + args.budget_s
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bdpo_gpu_check_"))
    sections = args.only or ["generation", "scoring", "training"]
    report: dict[str, Any] = {"mode": plan.size, "environment": environment(), "plan": plan.__dict__}
    try:
        if "generation" in sections:
            run_section(report, "generation", lambda: generation(plan, work))
        if "training" in sections:
            run_section(report, "training", lambda: training(plan, deadline))
        if "scoring" in sections:
            run_section(report, "scoring", lambda: scoring(plan, deadline))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["total_seconds"] = time.time() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from pipeline.io import write_text_atomic

    write_text_atomic(args.out_dir / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
    markdown = to_markdown(report)
    write_text_atomic(args.out_dir / "gpu_check.md", markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
