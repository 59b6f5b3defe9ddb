"""What a training output is a function of, as one record: the run's fingerprint.

A checkpoint or a `final/` is resumed or reused only by a run whose fingerprint is the same; otherwise the resume
would train 0 steps (or continue from weights trained another way) and report the new settings beside the old
weights. The record holds:

- `train`: the train section, minus the keys that cannot change the weights (`IGNORED_TRAIN_KEYS`, each with
  why), and minus `max_steps` when the LR schedule does not depend on it (`constant`: training 300 steps, then
  100 more, is training 400; a checkpoint beyond `max_steps` is refused separately);
- `model`: the model section (weights, family, revision, variant, dtype);
- `num_processes`: a resume on another number of processes would cut the pair stream into other global batches;
- `pairs`: the pairs trained on (strategy, count, a digest of the sorted winner/loser ids and confidences): a
  re-vote that changes them is another run, one that writes the same pairs is not;
- `candidates`: the candidates table (`candidates_identity`: its recorded image settings, part files and sizes,
  not modification times, which change on copy);
- `encoded_image_size`: when the trainer VAE-encodes images itself (imported datasets), the size it brings them to
  (`generation.height` × `width`); None when every latent is stored.

Pure functions, except `candidates_identity`, which lists files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import RunConfig
from pipeline.io import read_manifest
from pipeline.paths import table_files

VERSION = 1
IGNORED_TRAIN_KEYS = {
    "resume": "where to start from, not what is trained",
    "log_every": "how often metrics are reduced and printed",
    "tracker": "where metrics are logged",
    "keep_checkpoints": "how many checkpoints stay on disk",
    "checkpoint_every": "when state is saved: saving draws no random numbers (the bit-exact resume test)",
}
STEP_INDEPENDENT_SCHEDULES = ("constant",)  # warm-up, then constant: no dependence on max_steps


class FingerprintMismatchError(ValueError):
    """A checkpoint or final weights made by a run with other settings or data than this one."""


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pairs_digest(image_id_w: np.ndarray, image_id_l: np.ndarray, confidence: np.ndarray) -> str:
    """A digest of the pairs as the trainer reads them (already sorted by winner and loser id)."""
    h = hashlib.sha1()
    for column in (image_id_w, image_id_l):
        h.update("\n".join(column.tolist()).encode("utf-8"))
        h.update(b"\x1f")
    h.update(np.ascontiguousarray(confidence, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def candidates_identity(candidates_dir: Path) -> dict[str, Any]:
    """The candidates table as a small record: its recorded image settings and its part files with their sizes."""
    files = [[p.name, p.stat().st_size] for p in table_files(candidates_dir)]
    try:
        settings = read_manifest(candidates_dir).get("image_settings")
    except (FileNotFoundError, ValueError):
        settings = None
    return {"image_settings": settings, "files": len(files), "files_digest": digest(files)}


def training_fingerprint(
    cfg: RunConfig,
    num_processes: int,
    pairs: Mapping[str, Any],
    candidates: Mapping[str, Any],
    encodes_images: bool = False,
) -> dict[str, Any]:
    """The record a training output is a function of (see the module docstring); `encodes_images`: some latents
    are made by the trainer from images (then the training size counts)."""
    train = cfg.train.model_dump(mode="json")
    for key in IGNORED_TRAIN_KEYS:
        train.pop(key)
    if cfg.train.lr_scheduler in STEP_INDEPENDENT_SCHEDULES:
        train.pop("max_steps")
    return {
        "version": VERSION,
        "train": train,
        "model": cfg.model.model_dump(mode="json"),
        "num_processes": num_processes,
        "pairs": dict(pairs),
        "candidates": dict(candidates),
        "encoded_image_size": [cfg.generation.height, cfg.generation.width] if encodes_images else None,
    }


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"ref_update": {"mode": "hard"}}}` → `{"train.ref_update.mode": "hard"}`."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old → new` for every leaf that differs (a key only one side has shows as missing)."""
    a, b = flatten(old), flatten(new)
    missing = "<missing>"
    return [
        f"{key}: {a.get(key, missing)!r} → {b.get(key, missing)!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key, missing) != b.get(key, missing)
    ]


def check_same_run(old: Mapping[str, Any], new: Mapping[str, Any], what: str) -> None:
    """Refuse to resume or reuse `what` (a checkpoint, final weights) made by another run, naming each change."""
    changes = fingerprint_changes(old, new)
    if changes:
        raise FingerprintMismatchError(
            f"{what} was made by a run with other settings or data: {'; '.join(changes)}. It is not resumed or "
            "reused. To train this configuration, use a new run.output_dir, or start fresh here with --set "
            "train.resume=never (replaces this strategy's checkpoints and final weights)"
        )


def check_step(checkpoint_step: int, max_steps: int, what: str) -> None:
    """A checkpoint beyond `max_steps` (allowed to differ for a constant schedule) would be reported as this run."""
    if checkpoint_step > max_steps:
        raise FingerprintMismatchError(
            f"{what} is at step {checkpoint_step}, beyond train.max_steps={max_steps}. Raise max_steps to continue "
            "it, use a new run.output_dir, or start fresh with --set train.resume=never"
        )
