"""The README's own scenario through the whole job (#16): after a finished `make demo`, `--set train.beta=2000
--set train.ref_update.mode=ema` used to train 0 steps, keep the old weights under the new settings and evaluate them.

It starts from a copy of the session's small demo run (`helpers.small_demo`): a finished demo is exactly the
README's starting point, and a copied run directory must be found complete as well. The job runs in a child
process, as test_job.py does, so the job's local Ray is not this pytest process's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
from helpers.small_demo import SMALL_DEMO, DemoRun

pytestmark = [pytest.mark.ray, pytest.mark.train]

README = ["train.beta=2000", "train.ref_update.mode=ema"]


def test_a_finished_demo_rerun_with_the_readmes_overrides(small_demo: DemoRun, tmp_path):
    assert small_demo.returncode == 0, small_demo.stdout[-3000:] + small_demo.stderr[-3000:]
    run = tmp_path / "run"
    shutil.copytree(small_demo.run_dir, run)
    child = multiprocessing.get_context("spawn").Process(target=_scenario, args=(run,))
    child.start()
    child.join(timeout=1500)
    assert child.exitcode == 0, "the job or one of its checks failed in the child process (traceback above)"


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def job(run: Path, *overrides: str) -> tuple[int, str]:
    """`python -m pipeline.job` with the small demo's settings (+ `overrides`) on `run`: (exit code, stderr)."""
    from pipeline.job import main

    args = ["--config", "configs/tiny.yaml", "--no-progress"]
    for item in [f"run.output_dir={run}", *SMALL_DEMO, *overrides]:
        args += ["--set", item]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _scenario(run: Path) -> None:
    train_dir, eval_dir = run / "train" / "majority", run / "eval"
    final = snapshot(train_dir / "final")
    table = (eval_dir / "winrates.parquet").read_bytes()
    tag = json.loads((eval_dir / "manifest.json").read_text())["models"]["majority"]["tag"]
    images = _parquet(snapshot(run / "candidates"))

    # The same job again: stage 1, training and evaluation all find their work done; nothing is rewritten.
    code, err = job(run)
    assert code == 0, err
    assert "stage 1: 0 new images (9 already there)" in _latest_job_log(run).read_text()
    assert _parquet(snapshot(run / "candidates")) == images  # (its manifest records each call)
    assert snapshot(train_dir / "final") == final
    assert json.loads((train_dir / "manifest.json").read_text())["resumed_from"] == str(
        train_dir / "checkpoints" / "checkpoint-0000004"
    )
    assert (eval_dir / "winrates.parquet").read_bytes() == table

    # The README's overrides: refused, both changes named, the trained weights and their evaluation kept.
    code, err = job(run, *README)
    assert code == 2, err
    assert "train.beta: 500.0 → 2000.0" in err and "train.ref_update.mode: 'hard' → 'ema'" in err
    assert "Traceback" not in err and "--set train.resume=never" in err
    assert snapshot(train_dir / "final") == final
    assert (eval_dir / "winrates.parquet").read_bytes() == table

    # Starting fresh, as the message says: trained under the new settings, and those weights are evaluated.
    assert job(run, *README, "train.resume=never")[0] == 0
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["resumed_from"] is None and manifest["config"]["train"]["beta"] == 2000
    assert snapshot(train_dir / "final") != final
    assert json.loads((eval_dir / "manifest.json").read_text())["models"]["majority"]["tag"] != tag


def _parquet(files: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: stamp for name, stamp in files.items() if name.endswith(".parquet")}


def _latest_job_log(run: Path) -> Path:
    """The newest `<run>/logs/job-<time>-<pid>.log`: the console's lines are in it too."""
    return max((run / "logs").glob("job-*.log"), key=lambda p: p.stat().st_mtime_ns)
