"""Report benchmark: build time and page size of `build_report` on a large synthetic run, beside reading its tables.

The run is `pipeline.testing.synthetic_run` (candidates with one shared tiny PNG and made-up scores on each metric's
scale, the real majority vote with its diagnostics, a training log, an evaluation): `--prompts 125000
--candidates 8` is a million candidate rows and 3.5M formed pairs. Measured, each best of `--repeat` rounds:

- `read tables (polars)`: the obvious baseline, the columns the report's statistics need read with polars and
  nothing else (candidates' prompt ids and scores, the pairs' votes, the evaluation tables);
- `build_report`: the whole page (statistics on every row, sampled prompts, pairs and items, images written);

then the page's size: `index.html` and the images beside it.

    python benchmarks/bench_report.py                                   # 1M candidates (building the run ~1 min)
    python benchmarks/bench_report.py --prompts 1000 --candidates 8     # a quick one
    python benchmarks/bench_report.py --prompts 100 --image-px 512 --eval-items 400   # page size with real-size images
    python benchmarks/bench_report.py --run-dir runs/bench_report --keep   # reuse the synthetic run next time
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl

from pipeline.paths import RunPaths, table_files
from pipeline.reporting import build_report
from pipeline.testing.synthetic_run import METRICS, make_synthetic_run


def read_tables(root: Path) -> int:
    """The baseline: every table the report's statistics read, read with polars; returns the rows read."""
    paths = RunPaths(root)
    candidates = pl.read_parquet(
        table_files(paths.candidates), columns=["prompt_id", *[f"score_{m}" for m in METRICS]]
    )
    pairs = pl.read_parquet(
        table_files(paths.pairs("majority")), columns=[*[f"vote_{m}" for m in METRICS], "votes_w", "votes_l"]
    )
    winrates = pl.read_parquet(paths.eval / "winrates.parquet")
    per_image = pl.read_parquet(paths.eval / "per_image.parquet")
    return candidates.height + pairs.height + winrates.height + per_image.height


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        rounds.append(time.perf_counter() - t0)
    return min(rounds), rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=125_000)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--eval-items", type=int, default=10_000)
    parser.add_argument(
        "--image-px",
        type=int,
        default=None,
        help="images of this size (noisy PNGs) instead of a tiny shared one",
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="where the synthetic run goes (reused if there)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the synthetic run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    root = args.run_dir or Path(tempfile.mkdtemp(prefix="bench_report_")) / "run"
    made = None
    if not (root / "eval" / "manifest.json").is_file():
        t0 = time.perf_counter()
        make_synthetic_run(
            root,
            args.prompts,
            args.candidates,
            eval_items=args.eval_items,
            distinct_images=False,
            image_px=args.image_px,
        )
        made = time.perf_counter() - t0
        print(f"[bench] synthetic run written in {made:.1f}s: {root}", flush=True)

    results = {"candidates": args.prompts * args.candidates, "synthetic_run_s": made}
    best, rounds = timed(lambda: read_tables(root), args.repeat)
    results["read_tables_s"], results["read_tables_rounds"] = best, rounds
    best, rounds = timed(lambda: build_report(root), args.repeat)
    results["build_report_s"], results["build_report_rounds"] = best, rounds
    report = root / "report"
    html = (report / "index.html").stat().st_size
    images = sum(p.stat().st_size for p in (report / "images").iterdir())
    results |= {
        "html_bytes": html,
        "image_bytes": images,
        "images": len(list((report / "images").iterdir())),
        "page_bytes": html + images,
        "pairs": pl.scan_parquet(table_files(RunPaths(root).pairs("majority")))
        .select(pl.len())
        .collect()
        .item(),
    }
    ratio = results["build_report_s"] / results["read_tables_s"]
    print(
        f"\n{results['candidates']:,} candidates, {results['pairs']:,} kept pairs, {args.eval_items:,} eval items\n"
        f"| method | best s | rounds s | × read |\n|---|---|---|---|\n"
        f"| read tables (polars) | {results['read_tables_s']:.2f} | "
        f"{', '.join(f'{r:.2f}' for r in results['read_tables_rounds'])} | 1.00 |\n"
        f"| build_report | {results['build_report_s']:.2f} | "
        f"{', '.join(f'{r:.2f}' for r in results['build_report_rounds'])} | {ratio:.2f} |\n\n"
        f"page: index.html {html / 1e6:.2f} MB + {results['images']} images {images / 1e6:.2f} MB = "
        f"{results['page_bytes'] / 1e6:.2f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.run_dir is None and not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
