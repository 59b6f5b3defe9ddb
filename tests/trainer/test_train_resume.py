"""Across processes: exact resume after a stopped process, and `accelerate launch --num_processes 2` on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.configs import ROOT, train_config
from safetensors.torch import load_file

from pipeline.config import ModelSection, RunConfig
from pipeline.models.diffusion import load_pipeline
from pipeline.testing.toy_run import copy_toy_run
from trainer.recipe import train

pytestmark = pytest.mark.train

# Same meaning as in test_train.py: relative error of the weight update between two runs that differ only in
# float summation order (here: a gradient all-reduce over two processes).
UPDATE_TOLERANCE = 0.02


def make_cfg(run: Path, **train_keys) -> RunConfig:
    return train_config(run, **{"log_every": 1, "eval_pairs": 8, **train_keys})


def write_config(cfg: RunConfig, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


def run_cli(args: list[str], threads: int | None = None) -> subprocess.CompletedProcess:
    """Run a trainer command line; `threads` pins torch's CPU threads (bit-exact comparisons need the
    parent's thread count, since CPU kernels split their sums by thread)."""
    threads = threads or torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def checkpoint(run: Path, step: int) -> Path:
    return run / "train" / "majority" / "checkpoints" / f"checkpoint-{step:07d}"


def pickled(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_state(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize(
    "train_keys",
    [
        pytest.param(
            {"ref_update": {"mode": "ema", "every": 1, "decay": 0.5}, "lr_warmup_steps": 3}, id="full-ema"
        ),
        pytest.param(
            {
                "use_lora": True,
                "learning_rate": 1e-3,
                "ref_update": {"mode": "hard", "every": 3},
                "prompt_dropout": 0.5,  # the empty prompts of steps 3-4 must be those of the straight run
            },
            id="lora-hard-prompt-dropout",
        ),
    ],
)
def test_resume_after_a_stopped_process_is_bit_exact(tmp_path, train_keys):
    """4 steps in one go ≡ 2 steps in a process that stops, then a resume for 2 more: identical bits."""
    steps = 4
    straight = copy_toy_run(tmp_path / "straight")
    out_a = train(make_cfg(straight, max_steps=steps, checkpoint_every=steps, **train_keys))

    resumed = copy_toy_run(tmp_path / "resumed")
    cfg_b = make_cfg(resumed, max_steps=steps, checkpoint_every=steps, **train_keys)
    config = write_config(cfg_b, tmp_path / "resumed.yaml")
    # Same torch thread count as this process: CPU kernels split their sums by thread.
    run_cli([sys.executable, "trainer/train.py", "--config", str(config), "--stop-at-step", "2"])
    assert checkpoint(resumed, 2).is_dir() and not (resumed / "train" / "majority" / "final").exists()
    assert json.loads((resumed / "train" / "majority" / "manifest.json").read_text())["step"] == 2
    out_b = train(cfg_b)
    manifest = json.loads(out_b.manifest.read_text())
    assert manifest["resumed_from"] == str(checkpoint(resumed, 2))
    assert manifest["status"] == "finished" and out_b.step == steps

    a, b = checkpoint(straight, steps), checkpoint(resumed, steps)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert_same_state(wa, wb, "model")  # policy (and, with LoRA, the reference adapter)
    assert_same_state(pickled(a / "optimizer.bin"), pickled(b / "optimizer.bin"), "optimizer")
    for custom in sorted(p.name for p in a.glob("custom_checkpoint_*.pkl")):  # LR schedule, state, reference
        assert_same_state(pickled(a / custom), pickled(b / custom), custom)
    assert out_a.refreshes == out_b.refreshes
    assert out_a.eval_after == out_b.eval_after


def test_two_processes_match_one_process(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), batch 2 per process ≈ one process of 4.

    (`--cpu` would ask accelerate for mpirun; the torchrun launcher plus the trainer's CPU detection needs none.)
    """
    single = copy_toy_run(tmp_path / "single")
    train(make_cfg(single, batch_size=4, max_steps=2, checkpoint_every=2, eval_pairs=0))

    double = copy_toy_run(tmp_path / "double")
    config = write_config(
        make_cfg(double, batch_size=2, max_steps=2, checkpoint_every=2, eval_pairs=0), tmp_path / "d.yaml"
    )
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate CLI not found next to the Python interpreter"
    run_cli(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "trainer/train.py", "--config", str(config)],
        threads=1,  # two processes on two cores; the comparison is within a tolerance anyway
    )  # fmt: skip
    manifest = json.loads((double / "train" / "majority" / "manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["global_batch"] == 4
    assert sorted(p.name for p in checkpoint(double, 2).glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]

    base = load_pipeline(ModelSection(pretrained="tiny/sd15"), device="cpu").unet.state_dict()
    w1 = load_file(checkpoint(single, 2) / "model.safetensors")
    w2 = load_file(checkpoint(double, 2) / "model.safetensors")
    d1 = torch.cat([(w1[k] - base[k]).flatten() for k in base])
    d2 = torch.cat([(w2[k] - base[k]).flatten() for k in base])
    assert d1.norm() > 0
    assert float((d1 - d2).norm() / d1.norm()) < UPDATE_TOLERANCE
