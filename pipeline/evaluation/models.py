"""The models an evaluation compares: the base, and tuned ones (trainer outputs or diffusers directories).

Each model gets a tag that names it in the evaluation's candidates table (the `model` column, and part of every
image id): the base's is its reference, a tuned model's includes a fingerprint of its weight files, so retrained
weights are never mistaken for cached images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ModelSection, RunConfig


class EvalError(RuntimeError):
    """Evaluation cannot run or its tables do not line up; the message names the run, model or directory."""


@dataclass(frozen=True)
class TunedModel:
    """One model to compare with the base: a label for the tables, and a trainer output directory.

    `weights_dir` holds `weights.json` plus a UNet or LoRA (`trainer/export.py`); `base` is the model they apply
    to (default: the config's model). A local diffusers directory can be given instead as `pipeline_dir`.
    """

    name: str
    weights_dir: Path | None = None
    base: ModelSection | None = None
    pipeline_dir: Path | None = None

    def __post_init__(self) -> None:
        if (self.weights_dir is None) == (self.pipeline_dir is None):
            raise EvalError(f"tuned model {self.name!r}: give exactly one of weights_dir or pipeline_dir")


class TunedLoader:
    """Picklable zero-argument loader for a stage-1 actor: the base pipeline with tuned weights applied."""

    def __init__(self, base: ModelSection, weights_dir: str) -> None:
        self.base, self.weights_dir = base, weights_dir

    def __call__(self):
        from trainer.export import load_tuned_pipeline

        return load_tuned_pipeline(self.base, self.weights_dir)


# The model card describes the weights and is rewritten by every evaluation: not part of what was trained.
NOT_WEIGHTS = frozenset({"README.md"})


def fingerprint(directory: str | Path) -> str:
    """A short id of a weights directory's files (names, sizes, modification times): changes when retrained."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvalError(f"weights directory not found: {directory}")
    h = hashlib.sha1()
    files = (
        p
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() not in NOT_WEIGHTS
    )
    for path in sorted(files):
        stat = path.stat()
        h.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:10]


def parse_tuned(spec: str) -> TunedModel:
    """`NAME=DIR` or `DIR` (named after the directory's parent, e.g. `majority` for train/majority/final)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec).resolve().parent.name if Path(spec).name == "final" else Path(spec).name
    p = Path(path)
    if (p / "model_index.json").is_file():
        return TunedModel(name, pipeline_dir=p)
    return TunedModel(name, weights_dir=p)


def base_tag(cfg: RunConfig) -> str:
    return f"base:{cfg.model.pretrained}"


def tuned_tag(model: TunedModel) -> str:
    directory = model.weights_dir if model.weights_dir is not None else model.pipeline_dir
    assert directory is not None
    return f"tuned:{model.name}:{fingerprint(directory)}"
