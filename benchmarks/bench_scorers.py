"""Benchmark the scorers: images/s of our batched path against the reference one-image-at-a-time loop.

    python benchmarks/bench_scorers.py                      # tiny variants on the CPU, batch sizes 1–32
    python benchmarks/bench_scorers.py --full-size          # full architectures, random weights (for a GPU)
    python benchmarks/bench_scorers.py --scorers imagereward pickscore --batch-sizes 8 32 --images 128

The baseline `loop` scores one image per call on the same loaded model (batch 1, nothing memoised): the pattern of
the reference code (`ImageReward.score`, the PickScore README, the LAION script; `hpsv2.score` is slower still, as
it also reloads the checkpoint on every call). Each scorer runs in a fresh child process, so its peak memory is its
own: peak RSS on the CPU, `torch.cuda.max_memory_allocated` on a GPU. Image embeddings are memoised inside a
scorer (for backbone sharing); the memo is cleared before every timed pass, so every pass computes everything.

`--full-size` builds each scorer with `pretrained: random-full`: the real architecture (ViT-H-14, CLIP-H, ViT-L +
BERT-base, …) with random weights and no download, in float16 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCORERS = ["hpsv2", "hpsv21", "clip", "pickscore", "aesthetic", "imagereward"]
PROMPTS = ["a photo of a cat", "a red car on a wet street at night", "an oil painting of mountains", "a dog"]


def _images(n: int, size: int):
    import numpy as np
    from PIL import Image

    from pipeline.models.synthetic import synthetic_images

    arr = ((synthetic_images(n, size, seed=0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a.transpose(1, 2, 0)) for a in arr]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(scorer, images, prompts, batched: bool, repeats: int) -> float:
    """Best images/s over `repeats` passes (the noise on a shared machine only ever slows a pass down)."""
    best = float("inf")
    backbone = getattr(scorer, "backbone", None)
    for _ in range(repeats):
        if backbone is not None:
            backbone.clear_memo()
        _sync(scorer.device)
        start = time.perf_counter()
        if batched:
            scorer(images, prompts)
        else:
            for image, prompt in zip(images, prompts, strict=True):
                scorer([image], [prompt])
        _sync(scorer.device)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(args: argparse.Namespace) -> dict:
    """Measure one scorer in this process; returns one JSON-able record."""
    import torch

    from pipeline.config import ScorerSpec
    from scorers import build_scorer

    torch.set_num_threads(args.threads)
    pretrained = "random-full" if args.full_size else "tiny"
    start = time.perf_counter()
    scorer = build_scorer(
        ScorerSpec(
            name=args.child, pretrained=pretrained, device=args.device, batch_size=max(args.batch_sizes)
        )
    )
    build_s = time.perf_counter() - start
    images = _images(args.images, args.image_size)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]
    scorer(images[:4], prompts[:4])  # warm-up: lazy inits, kernels, allocator
    record = {
        "scorer": args.child,
        "weights": pretrained,
        "device": str(scorer.device),
        "dtype": str(scorer.dtype).removeprefix("torch."),
        "build_s": round(build_s, 2),
        "loop_img_s": round(_timed(scorer, images, prompts, batched=False, repeats=args.repeats), 1),
        "batched": {},
    }
    for batch in args.batch_sizes:
        scorer.spec = scorer.spec.model_copy(update={"batch_size": batch})
        record["batched"][batch] = round(
            _timed(scorer, images, prompts, batched=True, repeats=args.repeats), 1
        )
    record["peak_mb"] = round(_peak_mb(scorer.device), 1)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scorers", nargs="+", default=SCORERS, choices=SCORERS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square test images")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--full-size", action="store_true", help="full architectures with random weights")
    parser.add_argument("--out", type=Path, help="also write the records as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args)))
        return

    records = []
    for name in args.scorers:
        passed = sys.argv[1:] if argv is None else argv
        cmd = [sys.executable, __file__, "--child", name, *passed]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        records.append(json.loads(done.stdout.strip().splitlines()[-1]))
        _print_record(records[-1], args.batch_sizes)
    if args.out:
        args.out.write_text(json.dumps(records, indent=2))


def _print_record(r: dict, batch_sizes: list[int]) -> None:
    if not hasattr(_print_record, "header"):
        _print_record.header = True
        cols = " ".join(f"{'b' + str(b):>9}" for b in batch_sizes)
        print(f"{'scorer':<12} {'weights':<11} {'device':<6} {'loop':>8} {cols} {'best×':>6} {'peak MB':>8}")
    batched = [r["batched"][str(b)] if str(b) in r["batched"] else r["batched"][b] for b in batch_sizes]
    cols = " ".join(f"{v:>9.1f}" for v in batched)
    speedup = max(batched) / r["loop_img_s"]
    print(
        f"{r['scorer']:<12} {r['weights']:<11} {r['device']:<6} {r['loop_img_s']:>8.1f} {cols} "
        f"{speedup:>6.2f} {r['peak_mb']:>8.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
