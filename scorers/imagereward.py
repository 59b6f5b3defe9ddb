"""ImageReward (Xu et al. 2023): BLIP ViT-L + cross-attending BERT + reward MLP, standardised (≈ z-score).

Built on timm and plain torch (`blip.py`), not on the `image-reward` package, and loaded from the official
`ImageReward.pt` through the key mapping below. Preprocessing as the reference: bicubic resize + centre crop to 224
with OpenAI CLIP normalisation; the prompt is tokenised by `bert-base-uncased` (plus BLIP's `[DEC]`/`[ENC]` tokens),
padded and truncated to 35 tokens.

`pretrained`: None → hub `THUDM/ImageReward` (`ImageReward.pt`, `med_config.json`); a local directory holding those
two files (and optionally `vision_config.json`, and a `tokenizer/` folder); `tiny`; `random-full`.
`options.tokenizer` overrides the tokenizer (default `bert-base-uncased`, or the directory's `tokenizer/`).

The tiny variant's tokenizer is a WordPiece vocabulary we write ourselves (special tokens, characters, word pieces
and a few hundred common words), because `bert-base-uncased`'s vocabulary is not available offline. Real runs use
the real one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BertTokenizer

from pipeline.config import ScorerSpec
from scorers.base import Scorer, ScorerError, register
from scorers.blip import ImageRewardModel, TextConfig, VisionConfig
from scorers.preprocess import clip_center_crop, stack
from scorers.tiny import ensure_built, is_random_full, is_tiny, seed_for
from scorers.weights import is_local, load_strict, read_state_dict, resolve_file

HUB_REPO = "THUDM/ImageReward"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
VISION_CONFIG = "vision_config.json"
TOKENIZER = "bert-base-uncased"
MAX_TOKENS = 35

# Official checkpoint prefix → ours. Keys under DROPPED are BLIP pre-training parts the reward does not use.
KEY_MAP = {"blip.visual_encoder.": "visual.", "blip.text_encoder.": "text.", "mlp.": "head."}
DROPPED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


def map_official_keys(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """Rename an official ImageReward state dict to `ImageRewardModel`'s names; unknown keys are an error."""
    mapped, unknown = {}, []
    for key, value in state.items():
        if key.startswith(DROPPED):
            continue
        prefix = next((p for p in KEY_MAP if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        mapped[KEY_MAP[prefix] + key[len(prefix) :]] = value
    if unknown:
        raise ScorerError(
            f"imagereward: checkpoint {path} has keys outside {sorted(KEY_MAP)}: {sorted(unknown)[:8]}"
        )
    return mapped


def to_official_keys(model: ImageRewardModel, embed_dim: int = 256) -> dict[str, torch.Tensor]:
    """Our weights in the official layout (with BLIP's unused projections, random), for writing tiny checkpoints."""
    inverse = {ours: theirs for theirs, ours in KEY_MAP.items()}
    state = {}
    for key, value in model.state_dict().items():
        prefix = next(p for p in inverse if key.startswith(p))
        state[inverse[prefix] + key[len(prefix) :]] = value.clone()
    vision_width = int(model.visual.embed_dim)
    first = model.head.layers[0]
    assert isinstance(first, torch.nn.Linear)
    text_width = first.in_features
    state["blip.vision_proj.weight"] = torch.randn(embed_dim, vision_width) * 0.02
    state["blip.vision_proj.bias"] = torch.zeros(embed_dim)
    state["blip.text_proj.weight"] = torch.randn(embed_dim, text_width) * 0.02
    state["blip.text_proj.bias"] = torch.zeros(embed_dim)
    n_pos = model.text.embeddings.position_embeddings.num_embeddings
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(n_pos)[None]
    return state


def load_tokenizer(ref: str) -> BertTokenizer:
    """BLIP's tokenizer: BERT uncased plus a `[DEC]` bos token and an `[ENC]` token, as `init_tokenizer` adds."""
    try:
        tokenizer = BertTokenizer.from_pretrained(ref)
    except OSError as exc:
        raise ScorerError(f"imagereward: cannot load BERT tokenizer {ref!r}: {exc}") from exc
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


# ---- tiny variant -------------------------------------------------------------------------------------------

# Common prompt words, so that the tiny vocabulary tokenises into words and not only into characters.
_WORD_TEXT = """
a an the of in on at with and or to from by for is are was be this that it as its into over under photo
picture painting drawing image portrait landscape close up view style art digital oil watercolor sketch
red green blue yellow orange purple pink black white gray brown gold silver bright dark colorful cat dog
bird horse cow fish lion tiger bear fox rabbit owl person man woman child people face hand eye tree
flower forest mountain river lake sea ocean beach sky cloud sun moon star night day snow rain city street
house building castle tower bridge road car train boat ship plane robot space planet garden field desert
big small large tiny old new young beautiful cute happy sad red detailed realistic highly high quality
sitting standing running flying walking holding wearing looking playing
"""
_PUNCT = list(".,!?;:'\"-()[]/&*+=#@%$")


def tiny_vocab() -> list[str]:
    """A small uncased WordPiece vocabulary: BERT's special tokens first, so their ids match bert-base-uncased's
    [PAD] = 0 convention, then characters, continuation pieces and common prompt words."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *_PUNCT, *("##" + c for c in chars)]
    seen = set(vocab)
    vocab += [w for w in dict.fromkeys(_WORD_TEXT.split()) if w not in seen]
    return vocab


TINY_VISION = VisionConfig(img_size=224, patch_size=32, embed_dim=32, depth=2, num_heads=2)


def tiny_med_config(vocab_size: int) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 40,
        "vocab_size": vocab_size,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "encoder_width": TINY_VISION.embed_dim,
        "add_cross_attention": True,
    }


@torch.no_grad()
def _randomize(model: ImageRewardModel) -> None:
    """Non-trivial random weights: small random biases and LayerNorm affines (not the zeros/ones of a fresh
    model), so that parity tests exercise every parameter, and a variance-preserving reward head."""
    for name, p in model.named_parameters():
        if name.startswith("head."):
            continue
        if name.endswith("bias"):
            torch.nn.init.normal_(p, std=0.02)
        elif p.ndim == 1:  # LayerNorm scales
            torch.nn.init.normal_(p, mean=1.0, std=0.1)
    model.head.randomize_()


def _write_tiny(directory: Path) -> None:
    vocab = tiny_vocab()
    tok_dir = directory / "tokenizer"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tok_dir / "vocab.txt"), do_lower_case=True).save_pretrained(tok_dir)
    med = tiny_med_config(len(vocab) + 2)  # + [DEC] and [ENC], as BLIP's 30524 = 30522 + 2
    (directory / MED_CONFIG).write_text(json.dumps(med, indent=2))
    (directory / VISION_CONFIG).write_text(json.dumps(asdict(TINY_VISION), indent=2))
    torch.manual_seed(seed_for("imagereward"))
    model = ImageRewardModel(TINY_VISION, TextConfig.from_med_config(med))
    _randomize(model)
    torch.save(to_official_keys(model), directory / CHECKPOINT)


def load_imagereward(ref: str) -> tuple[ImageRewardModel, Path]:
    """Build from `med_config.json` (+ optional `vision_config.json`) and load `ImageReward.pt` strictly."""
    med = json.loads(resolve_file(ref, MED_CONFIG, "imagereward").read_text())
    vision = VisionConfig()
    if is_local(ref) and (Path(ref).expanduser() / VISION_CONFIG).is_file():
        vision = VisionConfig(**json.loads((Path(ref).expanduser() / VISION_CONFIG).read_text()))
    model = ImageRewardModel(vision, TextConfig.from_med_config(med))
    path = resolve_file(ref, CHECKPOINT, "imagereward")
    load_strict(model, map_official_keys(read_state_dict(path), path), path)
    return model, path


@register("imagereward")
class ImageReward(Scorer):
    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        ref = spec.pretrained
        tokenizer_ref = spec.options.get("tokenizer")
        if is_random_full(ref):
            torch.manual_seed(0)
            model, self.weights = ImageRewardModel(VisionConfig(), TextConfig()), "random"
            if tokenizer_ref is None:  # bert-base-uncased is not available offline; ids stay within the vocab
                tokenizer_ref = str(ensure_built("imagereward", _write_tiny) / "tokenizer")
        else:
            if is_tiny(ref):
                ref = str(ensure_built("imagereward", _write_tiny))
            ref = ref or HUB_REPO
            model, path = load_imagereward(ref)
            self.weights = str(path)
            if tokenizer_ref is None:
                local_tok = Path(ref).expanduser() / "tokenizer" if is_local(ref) else None
                tokenizer_ref = str(local_tok) if local_tok and local_tok.is_dir() else TOKENIZER
        self.tokenizer = load_tokenizer(tokenizer_ref)
        self.model = model.to(self.device, self.dtype).eval()

    @torch.inference_mode()
    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        text = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        pixels = stack(images, clip_center_crop, self.device, self.dtype)
        rewards = self.model(
            pixels, text["input_ids"].to(self.device), text["attention_mask"].to(self.device)
        )
        return rewards.cpu().numpy()
