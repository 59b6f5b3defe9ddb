"""`make demo`: the whole job on the embedded default, then where every table and plot is, and the win rates.

    python -m pipeline.demo --config configs/tiny.yaml [--set key=value ...]

prompts → stage 1 (local Ray: generate + score with five tiny metrics) → majority vote → Diffusion-DPO with the
dynamic reference → evaluation on held-out prompts and seeds. The first run also builds the tiny models into the
local cache (the pre-trained tiny UNet takes about two minutes on two CPU cores); later runs reuse them, and
rerunning in the same directory skips images that are already generated.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pipeline.config import add_config_arguments, load_config
from pipeline.job import input_errors
from pipeline.models.zoo import resolve_pretrained
from pipeline.workflows.job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except input_errors() as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


def run_demo(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pipeline.models.pretrain").setLevel(
        logging.INFO
    )  # progress of the one-time model build

    started = time.perf_counter()
    print(f"[demo] model {cfg.model.pretrained} (built into the local cache on first use)", flush=True)
    t0 = time.perf_counter()
    path = resolve_pretrained(cfg.model.pretrained)
    model_seconds = time.perf_counter() - t0
    print(f"[demo] model ready in {model_seconds:.1f}s: {path}", flush=True)

    t0 = time.perf_counter()
    out = run_job(cfg, progress=not args.no_progress)
    job_seconds = time.perf_counter() - t0

    print("\n[demo] where everything is:")
    for what, where in out.paths().items():
        print(f"  {what:32s} {where}")
    print("\n[demo] seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in out.seconds.items()))
    if out.eval is not None:
        print()
        print(out.eval.markdown.read_text())
    print(
        f"[demo] the job (prompts → stage 1 → vote → train → evaluate) took {job_seconds:.1f}s; "
        f"model {model_seconds:.1f}s (a one-time build on first use, cached like a download); "
        f"total {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
