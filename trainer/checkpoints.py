"""Checkpoints: where they go, how one is written so a crash never leaves half of it, and which one to resume.

A checkpoint is accelerate's `save_state` directory `checkpoints/checkpoint-NNNNNNN/`: the policy (with LoRA, the
reference adapter too), optimizer, LR scheduler, RNG states, `TrainState` and, for a full fine-tune, the reference
UNet. It is written under a temporary name and renamed when every process has written its part; the newest
`train.keep_checkpoints` are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"


class TrainState:
    """Progress saved with each checkpoint: the optimizer step (which fixes the data position) and refreshes."""

    def __init__(self) -> None:
        self.step = 0
        self.refreshes: list[int] = []

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "refreshes": list(self.refreshes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.refreshes = [int(s) for s in state["refreshes"]]


def find_checkpoint(resume: str, checkpoints_dir: Path) -> Path | None:
    """`auto`: the newest complete checkpoint (or none); `never`: none; anything else: that directory."""
    if resume == "never":
        return None
    if resume == "auto":
        found = sorted(p for p in checkpoints_dir.glob(CHECKPOINT_PREFIX + "*") if p.is_dir())
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"train.resume: checkpoint directory not found: {path}")
    return path


def save_checkpoint(accelerator, checkpoints_dir: Path, step: int, keep: int) -> Path:
    """accelerate `save_state` into a temporary directory, renamed when every process has written its part."""
    final = checkpoints_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = checkpoints_dir / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(checkpoints_dir.glob(CHECKPOINT_PREFIX + "*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
