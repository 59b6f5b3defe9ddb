"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic; score = logit_scale.exp() × cosine (≈ 20).

Computed as in the PickScore README: the CLIP processor (shortest side 224, centre crop; text padded and truncated
at 77 tokens), projected features L2-normalised, scaled by the model's learnt temperature. transformers' CLIPModel,
never `trust_remote_code`; a checkpoint with missing or unexpected weights is an error.

`pretrained`: None → model `yuvalkirstain/PickScore_v1` with processor `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`
(`options.processor` to change); a local `save_pretrained` directory (holding the processor files too, or with
`options.processor`); `tiny`; `random-full`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from pipeline.config import ScorerSpec
from pipeline.models.clip_tokenizer import write_clip_tokenizer
from scorers.base import Scorer, ScorerError, register
from scorers.preprocess import OPENAI_MEAN, OPENAI_STD
from scorers.tiny import ensure_built, is_random_full, is_tiny, seed_for
from scorers.weights import is_local

MODEL_ID = "yuvalkirstain/PickScore_v1"
PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_TOKENS = 77

TINY_CONFIG = {
    "projection_dim": 32,
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 224,
        "patch_size": 32,
    },
}
# CLIP-ViT-H-14 (the PickScore architecture) as in the laion hub config.
FULL_CONFIG = {
    "projection_dim": 1024,
    "text_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "hidden_act": "gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    },
    "vision_config": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    },
}


def offline_processor() -> CLIPProcessor:
    """The laion CLIP-H processor rebuilt offline: CLIP BPE tokenizer padded with `!`, OpenAI image settings."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=3,  # bicubic
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp, MAX_TOKENS, pad_token="!"))
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _write_tiny(directory: Path) -> None:
    torch.manual_seed(seed_for("pickscore"))
    CLIPModel(CLIPConfig(**TINY_CONFIG)).save_pretrained(directory, safe_serialization=True)
    offline_processor().save_pretrained(directory)


def load_model(ref: str) -> CLIPModel:
    """CLIPModel.from_pretrained, but a checkpoint that leaves weights missing or unused is an error."""
    try:
        model, info = CLIPModel.from_pretrained(ref, output_loading_info=True)
    except (OSError, RuntimeError) as exc:  # missing files; transformers' shape-mismatch report
        raise ScorerError(f"pickscore: checkpoint {ref!r} does not fit CLIPModel: {exc}") from exc
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise ScorerError(f"pickscore: checkpoint {ref!r} does not fit CLIPModel: {bad}")
    return model


@register("pickscore")
class PickScore(Scorer):
    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        ref = spec.pretrained
        if is_random_full(ref):
            torch.manual_seed(0)
            model, self.processor, self.weights = (
                CLIPModel(CLIPConfig(**FULL_CONFIG)),
                offline_processor(),
                "random",
            )
        else:
            if is_tiny(ref):
                ref = str(ensure_built("pickscore", _write_tiny))
            ref = ref or MODEL_ID
            processor_ref = spec.options.get("processor")
            if processor_ref is None:
                has_own = is_local(ref) and any(
                    (Path(ref).expanduser() / f).is_file()
                    for f in ("preprocessor_config.json", "processor_config.json")
                )
                processor_ref = ref if has_own else PROCESSOR_ID
            try:
                self.processor = CLIPProcessor.from_pretrained(processor_ref)
            except OSError as exc:
                raise ScorerError(f"pickscore: cannot load processor {processor_ref!r}: {exc}") from exc
            model, self.weights = load_model(ref), ref
        self.model = model.to(self.device, self.dtype).eval()

    @torch.inference_mode()
    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        text = self.processor(
            text=prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        image_embeds = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        text_embeds = _pooled(
            self.model.get_text_features(
                input_ids=text["input_ids"].to(self.device),
                attention_mask=text["attention_mask"].to(self.device),
            )
        )
        cosine = (F.normalize(image_embeds.float(), dim=-1) * F.normalize(text_embeds.float(), dim=-1)).sum(
            -1
        )
        return (self.model.logit_scale.exp().float() * cosine).cpu().numpy()


def _pooled(output) -> torch.Tensor:
    """transformers ≥ 5 returns a model output whose `pooler_output` is the projected feature; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
