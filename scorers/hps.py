"""HPSv2 and HPSv2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on human preferences.

Score = cosine of the L2-normalised image and text embeddings (≈ 0.2–0.3 for real weights), computed as the
`hpsv2` package's `score()` does, with its preprocessing: longest side to 224, zero-padded to a square.

`pretrained`: None → hub `xswu/HPSv2` (file per version); a `.pt` file; a directory holding that file (and
optionally `open_clip_config.json` for a non-ViT-H-14 architecture); `tiny`; `random-full`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config import ScorerSpec
from scorers import openclip_backbone as ocb
from scorers.base import Scorer, register
from scorers.preprocess import hps_pad_square
from scorers.tiny import is_random_full, is_tiny
from scorers.weights import is_local, resolve_file

HUB_REPO = "xswu/HPSv2"
ARCH = "ViT-H-14"


class _HPS(Scorer):
    checkpoint_name = ""

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        ref = spec.pretrained
        if is_random_full(ref):
            cfg, weights = ocb.full_config(ARCH), f"random:{self.name}"

            def loader():
                torch.manual_seed(0)
                return ocb.build_model(cfg)
        else:
            if is_tiny(ref):
                ref = str(ocb.ensure_tiny(ARCH, self.name, self.checkpoint_name, key="state_dict"))
            ref = ref or HUB_REPO
            directory = Path(ref).expanduser() if is_local(ref) else None
            has_cfg = directory is not None and (directory / ocb.CONFIG_FILE).is_file()
            cfg = ocb.read_config(directory) if directory is not None and has_cfg else ocb.full_config(ARCH)
            path = resolve_file(ref, spec.options.get("filename", self.checkpoint_name), self.name)
            weights = str(path)

            def loader():
                return ocb.load_checkpoint(cfg, path, key="state_dict")

        self.backbone = ocb.get_backbone(cfg, weights, loader, self.device, self.dtype)
        self.weights = weights

    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        image = F.normalize(self.backbone.image_features(images, hps_pad_square), dim=-1)
        text = F.normalize(self.backbone.text_features(prompts), dim=-1)
        return (image * text).sum(-1).cpu().numpy()


@register("hpsv2")
class HPSv2(_HPS):
    checkpoint_name = "HPS_v2_compressed.pt"


@register("hpsv21")
class HPSv21(_HPS):
    checkpoint_name = "HPS_v2.1_compressed.pt"
