"""The GPU check script runs end to end on the CPU in tiny mode, so it cannot rot between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.configs import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.train]


def test_gpu_check_tiny_mode_measures_every_section(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            str(tmp_path),
            "--tiny",
            "--budget-s",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "tiny"

    gen = report["generation"]
    assert "error" not in gen, gen
    assert gen["plain_loop"]["images"] == gen["ray_job"]["images"] == 8
    assert gen["plain_loop"]["images_per_s"] > 0 and gen["ray_job"]["images_per_s_wall"] > 0

    scoring = {row["scorer"]: row for row in report["scoring"]}
    assert set(scoring) == {"hpsv2", "hpsv21", "clip", "pickscore", "aesthetic", "imagereward"}
    assert all("error" not in row and row["images_per_s"] > 0 for row in scoring.values()), scoring

    training = report["training"]
    assert {(r["family"], r["method"], r["reference"]) for r in training} >= {("sd15", "lora", "hard")}
    assert all("error" not in r and r["steps_per_s"] > 0 for r in training), training

    markdown = (tmp_path / "gpu_check.md").read_text()
    for heading in ("## Generation", "## Scoring", "## Diffusion-DPO training steps"):
        assert heading in markdown


def test_gpu_check_refuses_full_mode_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():  # the refusal is what a CPU-only machine must see
        return
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
