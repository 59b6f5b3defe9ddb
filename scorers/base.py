"""The one interface every preference metric implements, and the registry that builds them by name.

A scorer loads its model once, then maps a batch of PIL images and their prompts to a float32 array, one score per
image. Stage 1 calls it inside a Ray actor; evaluation and tests call it directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.config import ScorerSpec


class ScorerError(ValueError):
    """Bad input to a scorer, or weights that cannot be loaded; the message says which."""


class Scorer(ABC):
    """Base class: subclasses load weights in `__init__` and implement `_score_batch`."""

    #: registry name, also the suffix of the `score_<name>` column
    name: str = ""

    def __init__(self, spec: ScorerSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)

    @property
    def version(self) -> str:
        """Recorded in run manifests: which weights and which code produced a score column."""
        # Scorers set `self.weights` to the resolved checkpoint (path or hub file) once they have loaded it.
        return f"{self.name}:{getattr(self, 'weights', None) or self.spec.pretrained or 'default'}"

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        images, prompts = validate_batch(images, prompts, self.name)
        out = np.empty(len(images), dtype=np.float32)
        step = self.spec.batch_size
        for start in range(0, len(images), step):
            out[start : start + step] = self._score_batch(
                images[start : start + step], prompts[start : start + step]
            )
        if not np.all(np.isfinite(out)):
            bad = np.flatnonzero(~np.isfinite(out)).tolist()
            raise ScorerError(f"scorer {self.name!r} produced non-finite scores at batch positions {bad}")
        return out

    @abstractmethod
    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """Scores for at most `spec.batch_size` RGB images."""


# Modes with a defined conversion to 8-bit RGB.
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "LA", "L", "P", "1", "CMYK", "YCbCr", "RGBX"})


def resolve_device(device: str) -> torch.device:
    """`auto` is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on a GPU (the reference scorers run under autocast there) and float32 on the CPU."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def validate_batch(
    images: Sequence, prompts: Sequence[str], name: str
) -> tuple[list[Image.Image], list[str]]:
    """Check a batch and convert images to RGB; a bad item is an error naming its position."""
    if len(images) != len(prompts):
        raise ScorerError(f"{name}: {len(images)} images but {len(prompts)} prompts")
    rgb: list[Image.Image] = []
    for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        if not isinstance(image, Image.Image):
            raise ScorerError(f"{name}: item {i} is {type(image).__name__}, not a PIL image")
        try:
            image.load()  # a truncated or corrupt file fails here, not as a wrong score later
        except (OSError, SyntaxError) as exc:
            raise ScorerError(f"{name}: item {i} is a corrupt image: {exc}") from exc
        if image.width < 1 or image.height < 1:
            raise ScorerError(f"{name}: item {i} is an empty image of size {image.size}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ScorerError(f"{name}: item {i} has an empty prompt")
        if image.mode not in CONVERTIBLE_MODES:
            # 16-bit and float images would be clipped by PIL's conversion: a silent change of the picture.
            raise ScorerError(
                f"{name}: item {i} has image mode {image.mode!r}; expected one of {sorted(CONVERTIBLE_MODES)}"
            )
        if image.mode != "RGB":
            # RGBA is composited on white (what a viewer shows), greyscale and palette images are expanded.
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
                image = background
            else:
                image = image.convert("RGB")
        rgb.append(image)
    return rgb, list(prompts)


_REGISTRY: dict[str, Callable[[ScorerSpec], Scorer]] = {}


def register(name: str) -> Callable[[type[Scorer]], type[Scorer]]:
    """Class decorator: make a scorer buildable by `name` from a config."""

    def wrap(cls: type[Scorer]) -> type[Scorer]:
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    _import_builtin_scorers()
    return sorted(_REGISTRY)


def build_scorer(spec: ScorerSpec) -> Scorer:
    _import_builtin_scorers()
    if spec.name not in _REGISTRY:
        raise ScorerError(f"unknown scorer {spec.name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[spec.name](spec)


def _import_builtin_scorers() -> None:
    """Importing the package registers every built-in metric module."""
    import scorers  # noqa: F401
