"""Checkpoints: written as data only, checked before they are read, and chosen for a resume.

A checkpoint is `checkpoints/checkpoint-NNNNNNN/`, everything the trainer owns as safetensors (tensors) and JSON
(everything else). Nothing is pickled, so a damaged or planted checkpoint can fail to load but never runs code
(accelerate's own `save_state` pickles the optimizer, the LR schedule, the RNG states and registered objects):

    model.safetensors         the UNet's state dict (with LoRA: frozen base, policy and reference adapters)
    reference.safetensors     full fine-tune: the reference UNet copy
    optimizer.safetensors     the optimizer's state tensors, keyed `<parameter index>.<name>`
    optimizer.json            its param groups and the state's non-tensor entries
    scheduler.json            the LR schedule's state
    scaler.json               fp16 only: the gradient scaler's state
    train_state.json          `TrainState`: step, refreshes, the metrics the manifest reports
    rng_<rank>.safetensors    process <rank>'s torch CPU (and CUDA) generator states, as uint8 tensors
    rng_<rank>.json           process <rank>'s numpy and python generator states
    fingerprint.json          what the run is a function of (`trainer.fingerprint`)
    checkpoint.json           the index, written last: format, step, processes, every file with its size

It is written under a temporary name and renamed when every process has written its part; the newest
`train.keep_checkpoints` are kept. Reading checks the index first (every file present at its size, every header
readable) and only then changes a tensor: a damaged newest checkpoint is skipped with a warning for the one
before it (`resume: auto`); a damaged explicit one is an error naming the file. A directory that holds pickle
files is refused whole, and they are never opened.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.io import write_text_atomic

logger = logging.getLogger("trainer")

CHECKPOINT_PREFIX = "checkpoint-"
FORMAT = "balanced-dpo-checkpoint-1"
INDEX = "checkpoint.json"
FINGERPRINT = "fingerprint.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (damaged, of another format, or holding pickles); names the file."""


class TrainState:
    """Progress saved with each checkpoint: the optimizer step (which fixes the data position), the refreshes, and
    the metrics the manifest reports, so a resumed or reused run reports the run it continues."""

    def __init__(self) -> None:
        self.step = 0
        self.refreshes: list[int] = []
        self.eval_before: dict[str, float] = {}
        self.eval_after: dict[str, float] = {}
        self.metrics: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "refreshes": list(self.refreshes),
            "eval_before": dict(self.eval_before),
            "eval_after": dict(self.eval_after),
            "metrics": dict(self.metrics),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.refreshes = [int(s) for s in state["refreshes"]]
        self.eval_before = {k: float(v) for k, v in state.get("eval_before", {}).items()}
        self.eval_after = {k: float(v) for k, v in state.get("eval_after", {}).items()}
        self.metrics = {k: float(v) for k, v in state.get("metrics", {}).items()}


@dataclass
class TrainingObjects:
    """Everything a checkpoint saves and restores."""

    unet: torch.nn.Module  # unwrapped (not the DDP wrapper)
    reference: Any  # trainer.reference.UNetReference (saved) or AdapterReference (inside the UNet's state)
    optimizer: Any
    lr_scheduler: Any
    state: TrainState
    scaler: Any = None  # accelerate's GradScaler under fp16


# -- writing --------------------------------------------------------------------------------------------------


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, allow_nan=True))


def optimizer_parts(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict split into tensors (`<index>.<name>`) and the JSON rest."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        rest[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                rest[str(index)][name] = value
    return tensors, {"param_groups": state["param_groups"], "state": rest}


def optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any], current: dict[str, Any]):
    """The inverse of `optimizer_parts`; values that are tuples in `current` (Adam's betas) become tuples again."""
    state: dict[int, dict[str, Any]] = {int(i): dict(entries) for i, entries in rest["state"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    groups = []
    for saved, now in zip(rest["param_groups"], current["param_groups"], strict=False):
        groups.append({k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in saved.items()})
    return {"state": state, "param_groups": groups}


def rng_parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's generator states: torch's as uint8 tensors, numpy's and python's as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)
    kind, keys, pos, has_gauss, cached = numpy_state
    version, internal, gauss_next = random.getstate()
    return tensors, {
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }


def restore_rng(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = rest["python"]
    random.setstate((version, tuple(internal), gauss_next))


def write_parts(
    directory: Path, objects: TrainingObjects, fingerprint: dict[str, Any], main: bool, rank: int
):
    """This process's files of a checkpoint: its RNG states; the main process also everything shared."""
    rng_tensors, rng_rest = rng_parts()
    save_file(rng_tensors, str(directory / f"rng_{rank}.safetensors"))
    _json(directory / f"rng_{rank}.json", rng_rest)
    if not main:
        return
    from trainer.reference import UNetReference

    save_file(_tensors(objects.unet.state_dict()), str(directory / "model.safetensors"))
    if isinstance(objects.reference, UNetReference):
        save_file(_tensors(objects.reference.state_dict()), str(directory / "reference.safetensors"))
    opt_tensors, opt_rest = optimizer_parts(objects.optimizer.state_dict())
    save_file(opt_tensors, str(directory / "optimizer.safetensors"))
    _json(directory / "optimizer.json", opt_rest)
    _json(directory / "scheduler.json", objects.lr_scheduler.state_dict())
    if objects.scaler is not None:
        _json(directory / "scaler.json", objects.scaler.state_dict())
    _json(directory / "train_state.json", objects.state.state_dict())
    _json(directory / FINGERPRINT, fingerprint)


def save_checkpoint(
    accelerator,
    objects: TrainingObjects,
    fingerprint: dict[str, Any],
    checkpoints_dir: Path,
    step: int,
    keep: int,
) -> Path:
    """Write `checkpoint-<step>` into a temporary directory, index it, and rename it when every process is done."""
    final = checkpoints_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = checkpoints_dir / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_parts(tmp, objects, fingerprint, accelerator.is_main_process, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        index = {"format": FORMAT, "step": step, "num_processes": accelerator.num_processes, "files": files}
        write_text_atomic(tmp / INDEX, json.dumps(index, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(checkpoints_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# -- reading --------------------------------------------------------------------------------------------------


def checkpoint_dirs(checkpoints_dir: Path) -> list[Path]:
    """Finished checkpoint directories, newest first (temporary ones are hidden names)."""
    return sorted((p for p in checkpoints_dir.glob(CHECKPOINT_PREFIX + "*") if p.is_dir()), reverse=True)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's index, after checking that every file it lists is there, whole and readable.

    Raises `CheckpointError` naming the file: no index (an unfinished write, or another format), pickle files,
    a file missing or of another size than written, a safetensors header or a JSON file that does not parse.
    """
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{path} holds pickle files {pickles}, which this trainer never loads (a checkpoint of accelerate's "
            "own format, or planted files); resume from another checkpoint or start fresh"
        )
    index_path = path / INDEX
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{index_path} is missing: not a complete checkpoint of this trainer") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{index_path} cannot be read: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise CheckpointError(f"{index_path}: format {found!r}, expected {FORMAT!r}")
    for name, size in index["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint")
        if file.stat().st_size != size:
            raise CheckpointError(f"{file} has {file.stat().st_size} bytes, {size} were written: damaged")
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except Exception as exc:  # safetensors raises its own error type; all mean a damaged file here
            raise CheckpointError(f"{file} cannot be read: {exc}") from None
    return index


def read_fingerprint(path: Path) -> dict[str, Any]:
    return json.loads((path / FINGERPRINT).read_text())


def choose_checkpoint(resume: str, checkpoints_dir: Path) -> Path | None:
    """The checkpoint to resume from, verified. `never`: none; a directory: that one (an error if it cannot be
    used); `auto`: the newest usable one, skipping damaged ones with a warning naming the file."""
    if resume == "never":
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"train.resume: checkpoint directory not found: {path}")
        verify_checkpoint(path)
        return path
    problems = []
    for path in checkpoint_dirs(checkpoints_dir):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint %s: %s", path.name, exc)
            problems.append(str(exc))
            continue
        if problems:
            logger.warning("resuming from the older checkpoint %s", path)
        return path
    if problems:
        raise CheckpointError(
            f"no usable checkpoint in {checkpoints_dir}: {'; '.join(problems)}. Start fresh with "
            "--set train.resume=never (its checkpoints and final weights are replaced) or a new run.output_dir"
        )
    return None


def load_checkpoint(path: Path, objects: TrainingObjects, rank: int) -> None:
    """Restore every object from a verified checkpoint (`verify_checkpoint` first: nothing changes on a bad one)."""
    from trainer.reference import UNetReference

    def read_json(name: str) -> Any:
        return json.loads((path / name).read_text())

    try:
        objects.unet.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        if isinstance(objects.reference, UNetReference):
            objects.reference.load_state_dict(load_file(str(path / "reference.safetensors")), strict=True)
        current = objects.optimizer.state_dict()
        opt = optimizer_state(
            load_file(str(path / "optimizer.safetensors")), read_json("optimizer.json"), current
        )
        objects.optimizer.load_state_dict(opt)
        objects.lr_scheduler.load_state_dict(read_json("scheduler.json"))
        if objects.scaler is not None:
            objects.scaler.load_state_dict(read_json("scaler.json"))
        objects.state.load_state_dict(read_json("train_state.json"))
        restore_rng(load_file(str(path / f"rng_{rank}.safetensors")), read_json(f"rng_{rank}.json"))
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as exc:
        raise CheckpointError(f"{path} does not fit this run's model or optimizer: {exc}") from exc
