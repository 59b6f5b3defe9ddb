"""`make demo`: the whole job on the embedded default, then where every table and plot is, and the win rates.

    python -m pipeline.demo --config configs/tiny.yaml [--set key=value ...]

prompts → stage 1 (local Ray: generate + score with five tiny metrics) → majority vote → Diffusion-DPO with the
dynamic reference → evaluation on held-out prompts and seeds → the run's report (`<run>/report/index.html`). The
first run copies the committed tiny UNet into the local cache and builds the five tiny metric models there (seconds);
later runs reuse them, and rerunning in the same directory skips images that are already generated.
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.config import add_config_arguments, cli_config
from pipeline.console import console_session, say
from pipeline.job import input_errors
from pipeline.models.zoo import resolve_pretrained
from pipeline.reporting import build_report
from pipeline.workflows.job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress lines or bars")
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except input_errors() as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


def run_demo(args: argparse.Namespace) -> int:
    cfg = cli_config(args)
    with console_session(cfg.output_dir, "demo", cfg.run.verbose):
        started = time.perf_counter()
        path = resolve_pretrained(cfg.model.pretrained)
        model_seconds = time.perf_counter() - started
        say(f"[demo] model {cfg.model.pretrained}: {path}")

        t0 = time.perf_counter()
        out = run_job(cfg, progress=not args.no_progress)
        job_seconds = time.perf_counter() - t0
        page = build_report(cfg.output_dir).resolve()

        say("\n[demo] where everything is:")
        for what, where in out.paths().items():
            say(f"  {what:32s} {where}")
        say(f"  {'report (open it in a browser)':32s} {page}")
        if out.eval is not None:
            say("\n" + out.eval.markdown.read_text().rstrip() + "\n")
        say("[demo] seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in out.seconds.items()))
        say(
            f"[demo] the job (prompts → stage 1 → vote → train → evaluate) took {job_seconds:.1f}s; "
            f"total {time.perf_counter() - started:.1f}s (model {model_seconds:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
