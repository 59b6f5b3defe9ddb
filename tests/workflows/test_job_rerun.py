"""The README's own scenario through the whole job (#16): after a finished job, `--set train.beta=2000 --set
train.ref_update.mode=ema` used to train 0 steps, keep the old weights under the new settings and evaluate them.

Runs in a child process, as test_job.py does, so the job's local Ray is not this pytest process's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
from pathlib import Path

import pytest
from helpers.configs import SMALL_JOB

pytestmark = [pytest.mark.ray, pytest.mark.train]

TINY_JOB = [*SMALL_JOB, "train.eval_pairs=0", "vote.diagnostics=false"]
README = ["train.beta=2000", "train.ref_update.mode=ema"]


def test_a_finished_job_rerun_with_the_readmes_overrides(tmp_path):
    child = multiprocessing.get_context("spawn").Process(target=_scenario, args=(tmp_path,))
    child.start()
    child.join(timeout=1500)
    assert child.exitcode == 0, "the job or one of its checks failed in the child process (traceback above)"


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def job(tmp_path: Path, *overrides: str) -> tuple[int, str]:
    from pipeline.job import main

    args = ["--config", "configs/tiny.yaml", "--no-progress"]
    for item in [f"run.output_dir={tmp_path}", *TINY_JOB, *overrides]:
        args += ["--set", item]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _scenario(tmp_path: Path) -> None:
    train_dir, eval_dir = tmp_path / "train" / "majority", tmp_path / "eval"
    assert job(tmp_path)[0] == 0
    final = snapshot(train_dir / "final")
    table = (eval_dir / "winrates.parquet").read_bytes()
    tag = json.loads((eval_dir / "manifest.json").read_text())["models"]["majority"]["tag"]

    # The same job again: stage 1, training and evaluation all find their work done; nothing is rewritten.
    assert job(tmp_path)[0] == 0
    assert snapshot(train_dir / "final") == final
    assert json.loads((train_dir / "manifest.json").read_text())["resumed_from"].endswith(
        "checkpoint-0000002"
    )
    assert (eval_dir / "winrates.parquet").read_bytes() == table

    # The README's overrides: refused, both changes named, the trained weights and their evaluation kept.
    code, err = job(tmp_path, *README)
    assert code == 2, err
    assert "train.beta: 500.0 → 2000.0" in err and "train.ref_update.mode: 'hard' → 'ema'" in err
    assert "Traceback" not in err and "--set train.resume=never" in err
    assert snapshot(train_dir / "final") == final
    assert (eval_dir / "winrates.parquet").read_bytes() == table

    # Starting fresh, as the message says: trained under the new settings, and those weights are evaluated.
    assert job(tmp_path, *README, "train.resume=never")[0] == 0
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["resumed_from"] is None and manifest["config"]["train"]["beta"] == 2000
    assert snapshot(train_dir / "final") != final
    assert json.loads((eval_dir / "manifest.json").read_text())["models"]["majority"]["tag"] != tag
