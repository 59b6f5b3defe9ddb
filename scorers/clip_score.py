"""CLIP score: 100 × cosine of an open_clip model's image and text embeddings, per image.

Default: ViT-H-14 with open_clip's `laion2b_s32b_b79k` weights. `options: {arch: ViT-L-14}` selects OpenAI's
CLIP ViT-L/14 (tag `openai`), the backbone of the aesthetic predictor, with which it then shares one loaded model
and one image embedding per image. `options.tag` picks another open_clip pretrained tag.

`pretrained`: None → open_clip's tag (downloaded by open_clip); a weights file (with `options.arch`); a directory in
open_clip's local-dir layout (`open_clip_config.json` + weights); `tiny`; `random-full`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config import ScorerSpec
from scorers import openclip_backbone as ocb
from scorers.base import Scorer, ScorerError, register
from scorers.preprocess import clip_center_crop
from scorers.tiny import is_random_full, is_tiny
from scorers.weights import is_local

DEFAULT_TAGS = {"ViT-H-14": "laion2b_s32b_b79k", "ViT-L-14": "openai"}


def openclip_source(arch: str, tag: str | None, ref: str | None, what: str):
    """(model_cfg, weights identity, loader) for an open_clip backbone from a scorer's `pretrained` value.

    Shared by `clip` and `aesthetic` so that the same backbone gets the same identity and is loaded once.
    """
    quick_gelu = arch == "ViT-L-14" and (tag or DEFAULT_TAGS.get(arch)) == "openai"
    if is_random_full(ref):
        cfg = ocb.full_config(arch, quick_gelu=quick_gelu)

        def random_loader():
            torch.manual_seed(0)
            return ocb.build_model(cfg)

        return cfg, f"random:{arch}", random_loader
    if is_tiny(ref):
        ref = str(ocb.ensure_tiny(arch, f"openclip-{arch}"))
    if ref is None:
        tag = tag or DEFAULT_TAGS.get(arch)
        if tag is None:
            raise ScorerError(f"{what}: no default open_clip tag for {arch!r}; set options.tag")
        cfg = ocb.full_config(arch, quick_gelu=quick_gelu)
        return cfg, f"open_clip:{arch}:{tag}", lambda: open_clip.create_model(arch, pretrained=tag)
    if not is_local(ref):
        raise ScorerError(f"{what}: pretrained {ref!r} is neither a local path nor 'tiny'/'random-full'")
    path = Path(ref).expanduser()
    if path.is_dir():
        cfg = ocb.read_config(path)
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if not files:
            raise ScorerError(f"{what}: no weights file (.safetensors/.bin/.pt/.pth) in {path}")
        path = files[0]
    elif path.is_file():
        cfg = ocb.full_config(arch, quick_gelu=quick_gelu)
    else:
        raise ScorerError(f"{what}: weights not found: {path}")
    return cfg, str(path), lambda: ocb.load_checkpoint(cfg, path)


@register("clip")
class ClipScore(Scorer):
    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        arch = spec.options.get("arch", "ViT-H-14")
        cfg, self.weights, loader = openclip_source(arch, spec.options.get("tag"), spec.pretrained, self.name)
        self.backbone = ocb.get_backbone(cfg, self.weights, loader, self.device, self.dtype)

    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        image = F.normalize(self.backbone.image_features(images, clip_center_crop), dim=-1)
        text = F.normalize(self.backbone.text_features(prompts), dim=-1)
        return (100.0 * (image * text).sum(-1)).cpu().numpy()
