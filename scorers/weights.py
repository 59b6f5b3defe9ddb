"""Finding and loading scorer weights: a hub id by default, a local file or directory accepted, nothing unsafe.

Checkpoints are read with `torch.load(..., weights_only=True)` or safetensors, never by unpickling arbitrary code,
and loaded strictly: a missing or unexpected key is an error that names the file and the keys, because a half-loaded
reward model still returns plausible-looking numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from scorers.base import ScorerError


def is_local(ref: str) -> bool:
    """A reference that names something on disk (absolute, relative, home) rather than a hub repository."""
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()


def resolve_file(ref: str, filename: str | None, what: str) -> Path:
    """The checkpoint file for `ref`: a local file, `filename` inside a local directory, or a hub download."""
    if is_local(ref):
        path = Path(ref).expanduser()
        if path.is_dir():
            if filename is None:
                raise ScorerError(f"{what}: {path} is a directory; name the checkpoint file")
            path = path / filename
        if not path.is_file():
            raise ScorerError(f"{what}: checkpoint file not found: {path}")
        return path
    if filename is None:
        raise ScorerError(f"{what}: hub id {ref!r} given without a file name")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref, filename))
    except Exception as exc:  # offline, missing repo, missing file: all the same to the user
        raise ScorerError(f"{what}: cannot download {filename!r} from hub repo {ref!r}: {exc}") from exc


def read_state_dict(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (safetensors, or a torch file read with weights_only), optionally under `key`."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ScorerError(f"cannot read checkpoint {path} as a weights-only torch file: {exc}") from exc
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            found = sorted(state)[:10] if isinstance(state, Mapping) else type(state).__name__
            raise ScorerError(f"checkpoint {path} has no key {key!r} (found {found})")
        state = state[key]
    if not isinstance(state, Mapping):
        raise ScorerError(f"checkpoint {path} does not hold a state dict (found {type(state).__name__})")
    return dict(state)


def _shown(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Load `state` into `module`; any missing, unexpected or mis-shaped key is an error naming the file."""
    expected = module.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if shapes:
        detail = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in sorted(shapes)[:8]]
        problems.append("shape mismatch: " + ", ".join(detail))
    if problems:
        raise ScorerError(f"checkpoint {path} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)
