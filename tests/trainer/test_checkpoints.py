"""Checkpoints as data (#16): safetensors + JSON round-trip exactly, pickles are refused unopened, damage is named."""

from __future__ import annotations

import json
import logging
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.optimization import get_scheduler

from trainer.checkpoints import (
    CheckpointError,
    TrainingObjects,
    TrainState,
    choose_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from trainer.reference import UNetReference


class OneProcess:
    """The accelerator calls a checkpoint makes, for one process (the trainer's tests run the real Accelerator)."""

    is_main_process = True
    process_index = 0
    num_processes = 1

    def wait_for_everyone(self) -> None:
        pass


def make_objects(seed: int = 0) -> TrainingObjects:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    reference = UNetReference(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=3, num_training_steps=10)
    return TrainingObjects(model, reference, optimizer, schedule, TrainState())


def step(objects: TrainingObjects) -> None:
    loss = objects.unet(torch.randn(3, 4)).square().mean()  # draws from the global generator
    loss.backward()
    objects.optimizer.step()
    objects.lr_scheduler.step()
    objects.optimizer.zero_grad()
    objects.state.step += 1


def saved(tmp_path: Path, objects: TrainingObjects, step_no: int, fingerprint=None) -> Path:
    return save_checkpoint(
        OneProcess(), objects, fingerprint or {"run": 1}, tmp_path / "checkpoints", step_no, 3
    )


def test_a_resume_continues_bit_for_bit_and_nothing_is_pickled(tmp_path):
    a = make_objects()
    for _ in range(2):
        step(a)
    a.state.refreshes, a.state.eval_before = [2], {"implicit_acc": 0.5}
    path = saved(tmp_path, a, 2)
    assert all(p.suffix in (".safetensors", ".json") for p in path.iterdir())
    for _ in range(2):
        step(a)

    b = make_objects(seed=1)  # other weights and generator state: everything must come from the checkpoint
    verify_checkpoint(path)
    load_checkpoint(path, b, rank=0)
    assert (b.state.step, b.state.refreshes, b.state.eval_before) == (2, [2], {"implicit_acc": 0.5})
    assert b.optimizer.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)  # a tuple again
    for _ in range(2):
        step(b)
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters(), strict=True):
        assert torch.equal(pa, pb)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert a.lr_scheduler.state_dict() == b.lr_scheduler.state_dict()
    assert torch.equal(torch.get_rng_state(), torch.get_rng_state())
    assert np.random.random() == pytest.approx(
        np.random.random(), abs=1
    )  # numpy state restored: still usable


def test_generator_states_are_restored(tmp_path):
    objects = make_objects()
    step(objects)
    path = saved(tmp_path, objects, 1)
    expected = (torch.rand(3), np.random.random(3), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    load_checkpoint(path, make_objects(), rank=0)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.random(3), expected[1])
    assert random.random() == expected[2]


class Payload:
    """Unpickling this creates a marker file: what a crafted checkpoint could do with any code instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


ACCELERATE_PICKLES = [
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
    "custom_checkpoint_1.pkl",
    "custom_checkpoint_2.pkl",
    "pytorch_model.bin",
]


@pytest.mark.parametrize("name", ACCELERATE_PICKLES)
def test_a_checkpoint_holding_a_pickle_is_refused_unopened(tmp_path, name):
    objects = make_objects()
    step(objects)
    path = saved(tmp_path, objects, 1)
    marker = tmp_path / "code-ran"
    (path / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(
        CheckpointError, match=rf"holds pickle files \['{name}'\], which this trainer never loads"
    ):
        choose_checkpoint(str(path), tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        choose_checkpoint("auto", tmp_path / "checkpoints")
    assert not marker.exists()


def _damage(path: Path, how: str) -> Path:
    model = path / "model.safetensors"
    if how == "truncated":
        model.write_bytes(model.read_bytes()[:-100])
    elif how == "garbage-header":
        data = bytearray(model.read_bytes())
        data[8:40] = b"x" * 32
        model.write_bytes(bytes(data))
    elif how == "no-index":
        (path / "checkpoint.json").unlink()
        return path / "checkpoint.json"
    elif how == "bad-json":
        (path / "scheduler.json").write_text("{" + " " * (len((path / "scheduler.json").read_text()) - 1))
        return path / "scheduler.json"
    return model


@pytest.mark.parametrize("how", ["truncated", "garbage-header", "no-index", "bad-json"])
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, how):
    objects = make_objects()
    step(objects)
    older = saved(tmp_path, objects, 1)
    step(objects)
    newest = saved(tmp_path, objects, 2)
    bad_file = _damage(newest, how)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        assert choose_checkpoint("auto", tmp_path / "checkpoints") == older
    assert str(bad_file) in caplog.text and "resuming from the older checkpoint" in caplog.text
    with pytest.raises(CheckpointError) as err:  # asked for by name: an error naming the file
        choose_checkpoint(str(newest), tmp_path / "checkpoints")
    assert str(bad_file) in str(err.value) and "Traceback" not in str(err.value)


def test_no_checkpoint_and_never_start_fresh(tmp_path):
    assert choose_checkpoint("auto", tmp_path / "checkpoints") is None
    objects = make_objects()
    step(objects)
    saved(tmp_path, objects, 1)
    assert choose_checkpoint("never", tmp_path / "checkpoints") is None
    with pytest.raises(CheckpointError, match="not found"):
        choose_checkpoint(str(tmp_path / "nowhere"), tmp_path / "checkpoints")


def test_only_the_newest_are_kept_and_the_index_lists_every_file(tmp_path):
    objects = make_objects()
    for n in range(1, 6):
        step(objects)
        path = saved(tmp_path, objects, n)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint-0000003",
        "checkpoint-0000004",
        "checkpoint-0000005",
    ]
    index = json.loads((path / "checkpoint.json").read_text())
    assert index["step"] == 5 and set(index["files"]) == {p.name for p in path.iterdir()} - {
        "checkpoint.json"
    }


def test_the_fp16_gradient_scaler_is_saved_and_restored(tmp_path):
    """Under fp16 (a GPU) accelerate keeps a GradScaler; its state is JSON in the checkpoint (CPU scaler here)."""
    objects = make_objects()
    objects.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    objects.scaler.scale(torch.ones(()))  # the scaler starts lazily, with the first scaled loss
    objects.scaler.update(new_scale=256.0)
    step(objects)
    path = saved(tmp_path, objects, 1)
    assert json.loads((path / "scaler.json").read_text())["scale"] == 256.0
    restored = make_objects()
    restored.scaler = torch.amp.GradScaler("cpu")
    load_checkpoint(path, restored, rank=0)
    assert restored.scaler.state_dict() == objects.scaler.state_dict()
