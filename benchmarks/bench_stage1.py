"""Stage 1 throughput: the Ray pipeline against a plain sequential loop over the same models in one process.

    python benchmarks/bench_stage1.py                      # tiny models on CPU (configs/tiny.yaml)
    python benchmarks/bench_stage1.py --full-size          # full-size random-weight SD1.5 + scorers, on a GPU
    python benchmarks/bench_stage1.py --layouts fused chained separate --workers 1 2

Both sides run the same `GenerateBatch` / `ScoreBatch` callables and write through the same `CandidateStore`, so
the difference is Ray's: scheduling, object transfers, and the overlap of generation with scoring in separate
actors (`fused`: both in one actor, no overlap, one process start-up fewer). Two figures each: end-to-end images/s
(model loading included) and steady images/s (from the first batch written to the last, loading left out). Ray's
own start-up is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.config import RunConfig, load_config  # noqa: E402
from pipeline.data.prompts import load_prompts  # noqa: E402
from pipeline.io import read_manifest, write_text_atomic  # noqa: E402
from pipeline.paths import RunPaths  # noqa: E402
from pipeline.stage1 import run_stage1  # noqa: E402
from pipeline.stage1.batches import GenerateBatch, ScoreBatch  # noqa: E402
from pipeline.stage1.plan import plan_items  # noqa: E402
from pipeline.stage1.ray_plan import ensure_ray  # noqa: E402
from pipeline.stage1.store import CandidateStore, steady_images_per_second  # noqa: E402


def full_size_loader(family: str = "sd15", dtype: str = "float16"):
    """A full-size random-weight pipeline of `family` (no download); runs inside the generation actor."""
    import torch
    from transformers import CLIPTokenizer

    from pipeline.models.architectures import ARCHITECTURES, build_random_pipeline
    from pipeline.models.clip_tokenizer import write_clip_tokenizer

    arch = ARCHITECTURES[(family, "full")]
    with tempfile.TemporaryDirectory() as tmp:
        toks = [
            CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tmp) / str(i), pad_token=pad))
            for i, pad in enumerate(arch.pad_tokens)
        ]
    return build_random_pipeline(family, "full", toks, dtype=getattr(torch, dtype))


def make_config(args: argparse.Namespace) -> RunConfig:
    overrides = [f"prompts.limit={args.prompts}", f"generation.num_candidates={args.seeds}"]
    if args.full_size:
        scorers = ", ".join(
            f"{{name: {n}, pretrained: random-full, batch_size: 16, num_gpus: 0.1}}"
            for n in ("hpsv21", "clip", "pickscore", "aesthetic", "imagereward")
        )
        overrides += [
            "prompts.manifest=data_manifests/tiny.yaml",
            f"generation.num_inference_steps={args.steps or 20}",
            "generation.num_gpus=0.5",
            f"scoring.scorers=[{scorers}]",
        ]
        return load_config("configs/sd15.yaml", overrides)
    if args.steps:
        overrides.append(f"generation.num_inference_steps={args.steps}")
    return load_config("configs/tiny.yaml", overrides)


def sequential(cfg: RunConfig, model_ref, tag: str, out_dir: Path) -> dict:
    """The baseline: one process, generate a batch, score it, write it, repeat."""
    start = time.perf_counter()
    generate_batch = GenerateBatch(cfg, model_ref)
    score_batch = ScoreBatch(cfg.scoring.scorers, cfg.scoring.on_error)
    loaded = time.perf_counter()
    prompts = load_prompts(cfg.prompts)
    triples = list(prompts.table.select("prompt_id", "prompt", "source").iter_rows())
    items = plan_items(triples, model_tag=tag, seeds=range(cfg.generation.num_candidates))
    store = CandidateStore(RunPaths(out_dir), [s.name for s in cfg.scoring.scorers])
    step = cfg.generation.batch_size
    n = len(items["image_id"])
    for i in range(0, n, step):
        batch = {k: np.asarray(v[i : i + step]) for k, v in items.items()}
        store.write(score_batch(generate_batch(batch)))
    end = time.perf_counter()
    return {
        "images": n,
        "load_s": loaded - start,
        "end_to_end_ips": n / (end - start),
        "steady_ips": steady_images_per_second(store.write_log),
    }


def with_ray(cfg: RunConfig, model_ref, tag: str, out_dir: Path) -> dict:
    start = time.perf_counter()
    out = run_stage1(cfg, model_ref=model_ref, model_tag=tag, out_dir=out_dir, progress=False)
    end = time.perf_counter()
    call = read_manifest(out.candidates_dir)["calls"][-1]
    return {
        "images": out.n_rows,
        "end_to_end_ips": out.n_rows / (end - start),
        "steady_ips": call["steady_images_per_second"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full-size", action="store_true", help="full-size SD1.5 + scorers (GPU)")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=8, help="images per prompt")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's)")
    parser.add_argument(
        "--layouts",
        nargs="*",
        default=["fused", "chained", "separate"],
        choices=["fused", "chained", "separate"],
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1], help="generation actors to try")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads of the sequential loop (Ray actors use 1)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    cfg = make_config(args)
    model_ref = full_size_loader if args.full_size else None
    tag = "random-full/sd15" if args.full_size else cfg.model.pretrained
    results: dict = {"full_size": args.full_size, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-stage1-") as tmp:
        if not args.skip_sequential:
            if args.torch_threads:
                import torch

                torch.set_num_threads(args.torch_threads)
            results["sequential_torch_threads"] = args.torch_threads or "default"
            results["sequential"] = sequential(cfg, model_ref, tag, Path(tmp) / "sequential")
            print(f"sequential: {json.dumps(results['sequential'])}", flush=True)
        t0 = time.perf_counter()
        if not args.layouts:
            _report(results | {"ray_start_s": 0.0})
            return 0
        # Enough logical CPUs for the widest layout tried (one CPU per actor), as run_stage1 would ask for.
        ensure_ray(num_cpus=max(os.cpu_count() or 1, 2 + max(args.workers) + len(cfg.scoring.scorers)))
        results["ray_start_s"] = time.perf_counter() - t0
        for layout in args.layouts:
            for workers in args.workers:
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.scoring.layout = layout
                run_cfg.generation.num_workers = workers
                name = f"ray-{layout}-w{workers}"
                res = {"name": name, **with_ray(run_cfg, model_ref, tag, Path(tmp) / name)}
                results["runs"].append(res)
                print(f"{name}: {json.dumps(res)}", flush=True)
    _report(results)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    return 0


def _report(results: dict) -> None:
    base = results.get("sequential")
    print(f"\nRay start-up: {results['ray_start_s']:.1f}s (not in the figures below)")
    print(f"{'run':<22}{'images':>8}{'end-to-end img/s':>18}{'steady img/s':>14}{'steady vs loop':>16}")
    rows = ([{"name": "sequential loop", **base}] if base else []) + results["runs"]
    for r in rows:
        ratio = ""
        if base and base["steady_ips"] and r["steady_ips"]:
            ratio = f"{r['steady_ips'] / base['steady_ips']:.2f}x"
        steady = f"{r['steady_ips']:.2f}" if r["steady_ips"] else "n/a"
        print(f"{r['name']:<22}{r['images']:>8}{r['end_to_end_ips']:>18.2f}{steady:>14}{ratio:>16}")


if __name__ == "__main__":
    raise SystemExit(main())
