"""Benchmark stage 2: wall time and peak memory of the vote beside two baselines measured in the same run.

    python benchmarks/bench_vote.py                        # 100k and 1M prompts × 10 candidates × 5 metrics
    python benchmarks/bench_vote.py --prompts 100000 --repeat 3   # the small size only, best of 3

Baselines: `floor` is a bare polars self-join that only computes the summed sign votes over the ids (collected in
memory); `floor+write` is the same query written to parquet (a reference for what writing costs); `pandas` is a
pandas merge doing the same (run only up to --pandas-max-prompts, since at 45M pairs it
needs more memory than the machine has). Every method runs in a fresh child process, so each peak RSS is its own
(the table is built in another child: a child's peak RSS counts its parent's at the fork).
The vote rows run `pipeline.voting.run_vote`: the input checks, every column of the pairs schema written to parquet,
the exact counts and the manifest; `+diagnostics` adds the plots and summary.

The candidates are synthetic (`pipeline.testing.candidates.bench_candidates`): 16-hex-character ids that look
random like stage 1's digests, rows grouped by prompt in generation order (so not sorted by any id), float32
scores, and no image column (the vote never reads it; parquet projection skips it in a real table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRICS = ["hps", "pick", "aes", "ir", "clip"]
STRATEGIES = ["majority", "single_pick", "random_metric", "sum", "normalized_sum", "weighted_majority"]


def make_candidates(path: Path, n_prompts: int, n_candidates: int) -> None:
    from pipeline.testing.candidates import bench_candidates

    frame = bench_candidates(n_prompts, n_candidates, METRICS, seed=0)
    path.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path / "part-00000.parquet")


def floor(candidates: Path, write_to: Path | None = None) -> int:
    import polars as pl

    c = pl.scan_parquet(candidates / "*.parquet")
    a = c.select("prompt_id", ia="image_id", **{f"a{m}": f"score_{m}" for m in METRICS})
    b = c.select("prompt_id", ib="image_id", **{f"b{m}": f"score_{m}" for m in METRICS})
    votes = pl.sum_horizontal([(pl.col(f"a{m}") - pl.col(f"b{m}")).sign() for m in METRICS])
    query = a.join(b, on="prompt_id").filter(pl.col("ia") < pl.col("ib")).select("ia", "ib", votes=votes)
    if write_to is None:
        return query.collect(engine="streaming").height
    query.sink_parquet(write_to, compression="lz4", statistics=False)
    return pl.scan_parquet(write_to).select(pl.len()).collect().item()


def pandas_merge(candidates: Path) -> int:
    import numpy as np
    import pandas as pd

    c = pd.read_parquet(candidates, columns=["prompt_id", "image_id", *(f"score_{m}" for m in METRICS)])
    j = c.merge(c, on="prompt_id", suffixes=("_a", "_b"))
    j = j[j["image_id_a"] < j["image_id_b"]]
    votes = sum(np.sign(j[f"score_{m}_a"].to_numpy() - j[f"score_{m}_b"].to_numpy()) for m in METRICS)
    out = pd.DataFrame({"ia": j["image_id_a"].to_numpy(), "ib": j["image_id_b"].to_numpy(), "votes": votes})
    return len(out)


def vote(candidates: Path, out_dir: Path, strategy: str, diagnostics: bool) -> int:
    from pipeline.config import RunConfig
    from pipeline.io import read_manifest
    from pipeline.voting import run_vote

    cfg = RunConfig.model_validate(
        {"run": {"output_dir": str(out_dir)}, "vote": {"diagnostics": diagnostics}}
    )
    out = run_vote(cfg, strategy, candidates_dir=candidates)
    return read_manifest(out)["counts"]["pairs_kept"]


def child(args: argparse.Namespace) -> None:
    """Run one method and print its result as JSON (the parent measures wall time and peak RSS)."""
    candidates = Path(args.candidates)
    if args.child == "make":
        make_candidates(candidates, args.prompts[0], args.candidates_per_prompt)
        return
    start = time.perf_counter()
    if args.child == "floor":
        rows = floor(candidates)
    elif args.child == "floor+write":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rows = floor(candidates, Path(args.out) / "floor.parquet")
    elif args.child == "pandas":
        rows = pandas_merge(candidates)
    else:
        strategy, _, extra = args.child.partition("+")
        rows = vote(candidates, Path(args.out), strategy, diagnostics=extra == "diagnostics")
    print(json.dumps({"rows": rows, "inner_s": time.perf_counter() - start}))


def measure(method: str, candidates: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--candidates", str(candidates), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{method} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"method": method, "wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--candidates-per-prompt", type=int, default=10)
    parser.add_argument("--pandas-max-prompts", type=int, default=100_000)
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument(
        "--repeat", type=int, default=1, help="round-robin repeats; the best time is reported"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated tables here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--candidates", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    results = []
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n_prompts in args.prompts:
            candidates = Path(tmp) / f"candidates_{n_prompts}"
            t = time.perf_counter()
            # In a child: a child's peak RSS includes its parent's at the fork, so the parent stays small.
            size = ["--prompts", str(n_prompts), "--candidates-per-prompt", str(args.candidates_per_prompt)]
            make = [
                sys.executable,
                __file__,
                "--child",
                "make",
                "--candidates",
                str(candidates),
                "--out",
                "-",
            ]
            subprocess.run([*make, *size], check=True)
            n_pairs = n_prompts * args.candidates_per_prompt * (args.candidates_per_prompt - 1) // 2
            print(
                f"\n## {n_prompts:,} prompts × {args.candidates_per_prompt} candidates × {len(METRICS)} metrics "
                f"= {n_pairs:,} pairs (table built in {time.perf_counter() - t:.1f} s)",
                flush=True,
            )
            methods = ["floor", "floor+write"]
            if n_prompts <= args.pandas_max_prompts:
                methods.append("pandas")
            methods += [*args.strategies, "majority+diagnostics"]
            # Round-robin repeats, best time of each: the machine is shared, and the minimum is the least
            # disturbed run of every method alike.
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            for rep in range(args.repeat):
                for method in methods:
                    r = measure(method, candidates, Path(tmp) / "run")
                    runs[method].append(r)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {method:<22} {r['inner_s']:7.2f} s "
                        f"(process {r['wall_s']:.2f} s)   peak {r['peak_mb']:7.0f} MB   rows {r['rows']:,}",
                        flush=True,
                    )
            rows = []
            for method in methods:
                best = min(runs[method], key=lambda r: r["inner_s"])
                rows.append(
                    {
                        **best,
                        "prompts": n_prompts,
                        "pairs": n_pairs,
                        "repeats": [r["inner_s"] for r in runs[method]],
                        "peak_mb": max(r["peak_mb"] for r in runs[method]),
                    }
                )
            base = rows[0]["inner_s"]
            print(
                "\n| method | work s | × floor | process s | peak MB | rows out |\n|---|---|---|---|---|---|"
            )
            for r in rows:
                r["x_floor"] = r["inner_s"] / base
                print(
                    f"| {r['method']} | {r['inner_s']:.2f} | {r['x_floor']:.2f} | {r['wall_s']:.2f} | "
                    f"{r['peak_mb']:.0f} | {r['rows']:,} |"
                )
            results += rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
