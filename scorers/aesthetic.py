"""LAION improved aesthetic predictor v2: an MLP on L2-normalised OpenAI CLIP ViT-L/14 image embeddings (≈ 1–10).

The head is five linear layers with dropouts between them and no activations (so, at inference, an affine map of
the normalised embedding), as in `simple_inference.py` of christophschuhmann/improved-aesthetic-predictor. The
prompt is ignored. The CLIP backbone is the one `clip` with `options: {arch: ViT-L-14}` uses: built with the same
identity, it is loaded once per process and each image is embedded once.

`pretrained`: None → hub `camenduru/improved-aesthetic-predictor`, file `sac+logos+ava1-l14-linearMSE.pth`
(`options.repo` / `options.filename` to change); a `.pth` file; a directory holding it; `tiny`; `random-full`.
`options.backbone` (a `clip`-style `pretrained` value) points the backbone at local CLIP weights.
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
from scorers.clip_score import openclip_source
from scorers.heads import RewardMLP
from scorers.preprocess import clip_center_crop
from scorers.tiny import ensure_built, is_random_full, is_tiny, seed_for
from scorers.weights import load_strict, read_state_dict, resolve_file

HUB_REPO = "camenduru/improved-aesthetic-predictor"
FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
ARCH = "ViT-L-14"
FULL_DIM = 768


def load_head(path: Path) -> RewardMLP:
    """Read the head's checkpoint; its input width comes from the first layer, so tiny heads load the same way."""
    state = read_state_dict(path)
    if "0.weight" in state:  # saved from a bare nn.Sequential (some mirrors) rather than the script's MLP
        state = {f"layers.{k}": v for k, v in state.items()}
    first = state.get("layers.0.weight")
    head = RewardMLP(first.shape[1] if first is not None else FULL_DIM)
    load_strict(head, state, path)
    return head.eval()


def _write_tiny_head(directory: Path) -> None:
    torch.manual_seed(seed_for("aesthetic"))
    width = ocb.TINY_CONFIGS[ARCH]["embed_dim"]
    torch.save(RewardMLP(width).randomize_().state_dict(), directory / FILENAME)


@register("aesthetic")
class Aesthetic(Scorer):
    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        ref = spec.pretrained
        backbone_ref = spec.options.get("backbone", ref if (is_tiny(ref) or is_random_full(ref)) else None)
        # The head first: a wrong path fails fast, before a multi-GB backbone download.
        if is_random_full(ref):
            torch.manual_seed(0)
            self.head, self.weights = RewardMLP(FULL_DIM).eval(), "random"
        else:
            if is_tiny(ref):
                ref = str(ensure_built("aesthetic-head", _write_tiny_head))
            path = resolve_file(
                ref or spec.options.get("repo", HUB_REPO), spec.options.get("filename", FILENAME), self.name
            )
            self.head, self.weights = load_head(path), str(path)
        cfg, weights, loader = openclip_source(ARCH, spec.options.get("tag"), backbone_ref, self.name)
        self.backbone = ocb.get_backbone(cfg, weights, loader, self.device, self.dtype)
        self.head.to(self.device, self.dtype)
        self.backbone_weights = weights

    @property
    def version(self) -> str:
        return f"{self.name}:{self.weights}+{self.backbone_weights}"

    @torch.inference_mode()
    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        embedding = F.normalize(self.backbone.image_features(images, clip_center_crop), dim=-1)
        return self.head(embedding.to(self.dtype)).float().squeeze(-1).cpu().numpy()
