"""open_clip models shared by HPSv2, CLIP score and the aesthetic predictor: build, load, cache, embed once.

A backbone is identified by (architecture config, weights, device, dtype). Scorers built in the same process with
the same identity get the same loaded model, and image embeddings are memoised per image, so the aesthetic head and
an OpenAI CLIP-L score chained in one actor run the vision tower once per image.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

from scorers.base import ScorerError
from scorers.preprocess import stack
from scorers.tiny import ensure_built, seed_for
from scorers.weights import load_strict, read_state_dict

CONFIG_FILE = "open_clip_config.json"  # open_clip's own `local-dir:` layout
WEIGHTS_FILE = "open_clip_model.safetensors"

# Tiny stand-ins keep the real families' shape where it matters for code paths: 224-pixel input, the 77-token
# CLIP BPE text tower with argmax (end-of-text) pooling, QuickGELU for the OpenAI weights.
_TINY_VISION = {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32}
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-H-14": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT},
    "ViT-L-14": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT, "quick_gelu": True},
}


def full_config(arch: str, quick_gelu: bool = False) -> dict[str, Any]:
    """open_clip's built-in configuration of `arch` (no download)."""
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ScorerError(f"unknown open_clip architecture {arch!r}")
    cfg = copy.deepcopy(cfg)
    if quick_gelu:
        cfg["quick_gelu"] = True
    return cfg


def build_model(model_cfg: dict[str, Any]) -> open_clip.CLIP:
    """An open_clip CLIP with random weights from a `model_cfg` dict (the `model_cfg` of open_clip_config.json)."""
    cfg = copy.deepcopy(model_cfg)
    cfg.pop("custom_text", None)
    if "hf_model_name" in cfg.get("text_cfg", {}):
        raise ScorerError("open_clip models with a Hugging Face text tower are not supported here")
    return open_clip.model.CLIP(**cfg)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ScorerError(f"{directory}: no {CONFIG_FILE} (open_clip's local-dir layout) in this directory")
    data = json.loads(path.read_text())
    return data.get("model_cfg", data)


def write_tiny(
    directory: Path, arch: str, tag: str, weights_name: str = WEIGHTS_FILE, key: str | None = None
):
    """Write a tiny random open_clip model of `arch` in open_clip's local-dir layout (config + weights)."""
    cfg = TINY_CONFIGS[arch]
    torch.manual_seed(seed_for(tag))
    model = build_model(cfg)
    (directory / CONFIG_FILE).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(directory / weights_name))
    else:
        torch.save({key: state} if key else state, directory / weights_name)


def ensure_tiny(arch: str, tag: str, weights_name: str = WEIGHTS_FILE, key: str | None = None) -> Path:
    if arch not in TINY_CONFIGS:
        raise ScorerError(
            f"no tiny variant of open_clip architecture {arch!r}; choose {sorted(TINY_CONFIGS)}"
        )
    return ensure_built(tag, lambda d: write_tiny(d, arch, tag, weights_name, key))


class Backbone:
    """A loaded open_clip model plus a per-image memo of its image embeddings."""

    def __init__(self, model: open_clip.CLIP, tokenizer: Callable, device: torch.device, dtype: torch.dtype):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device, self.dtype = device, dtype
        self._memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.memo_size = 4096
        self.images_encoded = 0  # counts vision-tower work; tests check the sharing with it
        self.users = 0  # scorers holding this backbone; the memo (hashing every image) only pays off when > 1

    def clear_memo(self) -> None:
        """Forget memoised embeddings (benchmarks and tests that must recompute)."""
        self._memo.clear()

    @torch.inference_mode()
    def image_features(self, images: Sequence[Image.Image], transform: Callable, **kw: Any) -> torch.Tensor:
        """Unnormalised image embeddings (float32); with a shared backbone, only of images not seen before."""
        if self.users <= 1:
            pixels = stack(images, transform, self.device, self.dtype, **kw)
            self.images_encoded += len(images)
            return self.model.encode_image(pixels).float()
        keys = [(transform.__name__, tuple(sorted(kw.items())), image_digest(im)) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            pixels = stack([images[i] for i in todo], transform, self.device, self.dtype, **kw)
            feats = self.model.encode_image(pixels).float()
            self.images_encoded += len(todo)
            for i, f in zip(todo, feats, strict=True):
                self._memo[keys[i]] = f
        out = torch.stack([self._memo[k] for k in keys])
        for k in keys:
            self._memo.move_to_end(k)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        return out

    @torch.inference_mode()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens).float()


def image_digest(image: Image.Image) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.digest()


_BACKBONES: dict[tuple, Backbone] = {}


def get_backbone(
    model_cfg: dict[str, Any],
    weights: str,
    loader: Callable[[], open_clip.CLIP],
    device: torch.device,
    dtype: torch.dtype,
) -> Backbone:
    """The process-wide backbone for (config, weights, device, dtype); `loader` runs only on first use."""
    key = (json.dumps(model_cfg, sort_keys=True), weights, str(device), str(dtype))
    if key not in _BACKBONES:
        context = model_cfg.get("text_cfg", {}).get("context_length", 77)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
        try:
            model = loader()
        except (OSError, RuntimeError) as exc:  # open_clip's own download/load failures
            raise ScorerError(f"cannot load open_clip backbone {weights}: {exc}") from exc
        _BACKBONES[key] = Backbone(model, tokenizer, device, dtype)
    _BACKBONES[key].users += 1
    return _BACKBONES[key]


def load_checkpoint(model_cfg: dict[str, Any], path: Path, key: str | None = None) -> open_clip.CLIP:
    """Build `model_cfg` and load a weights file into it strictly (the path every file-based weight takes)."""
    model = build_model(model_cfg)
    state = read_state_dict(path, key)
    if state and next(iter(state)).startswith("module."):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    load_strict(model, state, path)
    return model
