"""The models an evaluation compares, any against any: the base, trainer outputs, diffusers directories, hub
pipelines and UNet-only checkpoints applied to the base.

A model is given on the command line (and in `eval.baseline`) as `[NAME=]REF`:

| REF | what it is |
|---|---|
| `base` | the config's model (`model.pretrained`) |
| a trainer output directory (`weights.json` inside) | full UNet or LoRA applied to its base (`trainer/export.py`) |
| a local diffusers directory (`model_index.json` inside) | a whole pipeline |
| a local directory with `unet/` (or a UNet's own `config.json`) and no `model_index.json` | a UNet-only checkpoint applied to the base |
| `hub:<id>[@<revision>]` | a whole pipeline from the hub (or `tiny/<family>`) |
| `unet:<id or dir>[@<revision>]` | a UNet-only checkpoint (`unet/` subfolder) applied to the base: the public Diffusion-DPO weights, `mhdang/dpo-sd1.5-text2image-v1` and `mhdang/dpo-sdxl-text2image-v1`, are published this way |

Each model gets a tag that names it in the evaluation's image cache (the `model` column, and part of every image
id), so the same model, prompt and seed is the same image in every comparison: local weights are tagged with a
fingerprint of their files (retrained weights are never mistaken for cached images), hub weights with their id
and revision.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ModelSection, RunConfig

BASE = "base"
HUB_PREFIX = "hub:"
UNET_PREFIX = "unet:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class EvalError(RuntimeError):
    """Evaluation cannot run or its tables do not line up; the message names the run, model or directory."""


@dataclass(frozen=True)
class TunedModel:
    """One side of a comparison: a label for the tables and exactly one source of weights.

    - `weights_dir`: a trainer output (`weights.json` plus a UNet or LoRA), applied to `base`;
    - `pipeline_dir`: a local diffusers directory;
    - `hub_id`: a whole pipeline by hub id (or `tiny/<family>`), at `revision`;
    - `unet`: a UNet-only checkpoint (a local directory or a hub id with a `unet/` subfolder), applied to `base`;
    - `is_base`: the config's own model.
    `base` defaults to the config's model.
    """

    name: str
    weights_dir: Path | None = None
    base: ModelSection | None = None
    pipeline_dir: Path | None = None
    hub_id: str | None = None
    unet: str | None = None
    revision: str | None = None
    is_base: bool = False

    def __post_init__(self) -> None:
        given = [self.weights_dir, self.pipeline_dir, self.hub_id, self.unet, self.is_base or None]
        if sum(x is not None for x in given) != 1:
            raise EvalError(
                f"model {self.name!r}: give exactly one of weights_dir, pipeline_dir, hub_id, unet or is_base"
            )

    @property
    def kind(self) -> str:
        if self.is_base:
            return "base"
        if self.weights_dir is not None:
            return "trainer output"
        if self.pipeline_dir is not None:
            return "diffusers directory"
        return "hub pipeline" if self.hub_id is not None else "UNet applied to the base"

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this model."""
        ref = self.weights_dir or self.pipeline_dir or self.hub_id or self.unet
        out = {"kind": self.kind, "weights": None if ref is None else str(ref), "revision": self.revision}
        if self.base is not None:
            out["base"] = self.base.pretrained
        return out


def base_model(name: str = BASE) -> TunedModel:
    return TunedModel(name, is_base=True)


class TunedLoader:
    """Picklable zero-argument loader for a stage-1 actor: the base pipeline with tuned weights applied."""

    def __init__(self, base: ModelSection, weights_dir: str) -> None:
        self.base, self.weights_dir = base, weights_dir

    def __call__(self):
        from trainer.export import load_tuned_pipeline

        return load_tuned_pipeline(self.base, self.weights_dir)


class PipelineLoader:
    """Picklable loader of a whole pipeline (local directory or hub id) with its own model section."""

    def __init__(self, model: ModelSection) -> None:
        self.model = model

    def __call__(self):
        from pipeline.models.diffusion import load_pipeline

        return load_pipeline(self.model)


class UNetLoader:
    """Picklable loader: the base pipeline with its UNet replaced by a UNet-only checkpoint."""

    def __init__(self, base: ModelSection, unet: str, revision: str | None) -> None:
        self.base, self.unet, self.revision = base, unet, revision

    def __call__(self):
        from pipeline.models.diffusion import load_pipeline, replace_unet

        pipe = load_pipeline(self.base)
        return replace_unet(pipe, self.unet, self.base.dtype, self.revision)


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


def _split_revision(ref: str) -> tuple[str, str | None]:
    ref, sep, revision = ref.partition("@")
    return ref, (revision or None) if sep else None


def _is_unet_only(path: Path) -> bool:
    """A UNet-only checkpoint: `unet/config.json` without a pipeline, or a UNet's own config."""
    if (path / "model_index.json").is_file():
        return False
    if (path / "unet" / "config.json").is_file():
        return True
    config = path / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("_class_name") == "UNet2DConditionModel"


def parse_tuned(spec: str) -> TunedModel:
    """`[NAME=]REF` (the module docstring lists the REFs); without NAME, the model is named after its reference
    (a trainer's `final/` after its strategy directory, e.g. `majority` for train/majority/final)."""
    name, sep, ref = spec.partition("=")
    if not sep:
        name, ref = "", spec
    if not ref:
        raise EvalError(f"model {spec!r}: no reference after {name}=")
    if ref == BASE:
        return base_model(name or BASE)
    for prefix in (HUB_PREFIX, UNET_PREFIX):
        if ref.startswith(prefix):
            target, revision = _split_revision(ref[len(prefix) :])
            if not (_HUB_ID.match(target) or target.startswith("tiny/") or Path(target).exists()):
                raise EvalError(
                    f"model {spec!r}: {target!r} is neither a hub id (owner/name) nor a local path"
                )
            default = re.sub(r"[^\w.-]+", "_", target.rstrip("/").split("/")[-1])
            if prefix == HUB_PREFIX:
                return TunedModel(name or default, hub_id=target, revision=revision)
            return TunedModel(name or default, unet=target, revision=revision)
    path = Path(ref)
    if not path.is_dir():
        raise EvalError(
            f"model {spec!r}: directory not found: {path} (hub weights: hub:<id> for a pipeline, "
            f"unet:<id> for a UNet-only checkpoint)"
        )
    if not name:
        name = path.resolve().parent.name if path.name == "final" else path.name
    if (path / "model_index.json").is_file():
        return TunedModel(name, pipeline_dir=path)
    if (path / "weights.json").is_file():
        return TunedModel(name, weights_dir=path)
    if _is_unet_only(path):
        return TunedModel(name, unet=str(path))
    raise EvalError(
        f"model {spec!r}: {path} holds none of weights.json (a trainer output), model_index.json (a diffusers "
        f"pipeline) or unet/config.json (a UNet-only checkpoint)"
    )


def base_tag(cfg: RunConfig) -> str:
    return f"base:{cfg.model.pretrained}"


def tuned_tag(model: TunedModel, cfg: RunConfig | None = None) -> str:
    """The model's tag in image ids: what its images depend on (weights; for a UNet alone, also the base)."""
    if model.is_base:
        if cfg is None:
            raise EvalError("the base model's tag needs the config")
        return base_tag(cfg)
    if model.hub_id is not None:
        return f"hub:{model.hub_id}@{model.revision or 'main'}"
    if model.unet is not None:
        base = (model.base or (cfg.model if cfg is not None else None)) or ModelSection()
        local = Path(model.unet)
        weights = f"{fingerprint(local)}" if local.is_dir() else f"{model.unet}@{model.revision or 'main'}"
        return f"unet:{weights}+{base.pretrained}"
    directory = model.weights_dir if model.weights_dir is not None else model.pipeline_dir
    assert directory is not None
    return f"tuned:{model.name}:{fingerprint(directory)}"


def model_reference(model: TunedModel, cfg: RunConfig) -> Any:
    """What stage 1 generates with: None for the base (the config's model), else a picklable loader."""
    base = model.base or cfg.model
    if model.is_base:
        return None
    if model.weights_dir is not None:
        return TunedLoader(base, str(model.weights_dir))
    if model.pipeline_dir is not None:
        return PipelineLoader(ModelSection(pretrained=str(model.pipeline_dir), dtype=cfg.model.dtype))
    if model.hub_id is not None:
        return PipelineLoader(
            ModelSection(pretrained=model.hub_id, revision=model.revision, dtype=cfg.model.dtype)
        )
    assert model.unet is not None
    return UNetLoader(base, model.unet, model.revision)
