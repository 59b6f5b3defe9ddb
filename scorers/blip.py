"""ImageReward's network rebuilt on maintained parts: a timm ViT image encoder and a BERT text encoder whose every
layer cross-attends to the image tokens (BLIP's "MED" encoder in multimodal mode), plus the reward MLP.

Module names follow the official checkpoint's (`embeddings.word_embeddings`, `encoder.layer.N.crossattention.self.
query`, …) so that the key mapping in `imagereward.py` is a renaming of prefixes, checked strictly. Only inference
is needed, so there is no decoder mode, no cache and no dropout at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import timm.models.vision_transformer as tvit
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from scorers.heads import RewardMLP


@dataclass(frozen=True)
class VisionConfig:
    """BLIP's ViT: ImageReward uses the 'large' one (ViT-L/16 at 224)."""

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16


@dataclass(frozen=True)
class TextConfig:
    """The fields of ImageReward's `med_config.json` that shape the network (BERT-base + cross-attention)."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @classmethod
    def from_med_config(cls, data: dict) -> TextConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def vision_transformer(cfg: VisionConfig) -> tvit.VisionTransformer:
    """timm's ViT with BLIP's settings: class token, qkv bias, LayerNorm eps 1e-6, no pooling, no head."""
    return tvit.VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )


class _Attention(nn.Module):
    """Multi-head attention whose keys/values come from `context` (the text itself, or the image tokens)."""

    def __init__(self, cfg: TextConfig, context_width: int) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(context_width, cfg.hidden_size)
        self.value = nn.Linear(context_width, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).flatten(2)


class _DenseNorm(nn.Module):
    """BERT's output block: dense, then LayerNorm of (result + residual)."""

    def __init__(self, cfg: TextConfig, width_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _AttentionBlock(nn.Module):
    def __init__(self, cfg: TextConfig, context_width: int) -> None:
        super().__init__()
        self.self = _Attention(cfg, context_width)
        self.output = _DenseNorm(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, context, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACT2FN[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: TextConfig, encoder_width: int) -> None:
        super().__init__()
        self.attention = _AttentionBlock(cfg, cfg.hidden_size)
        self.crossattention = _AttentionBlock(cfg, encoder_width)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, text_bias: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, text_bias)
        x = self.crossattention(x, image, None)  # every image token is attended to
        return self.output(self.intermediate(x), x)


class _Embeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class _Encoder(nn.Module):
    def __init__(self, cfg: TextConfig, encoder_width: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, encoder_width) for _ in range(cfg.num_hidden_layers))


class MultimodalTextEncoder(nn.Module):
    """BERT whose layers self-attend over the prompt and cross-attend to the image; returns all token states."""

    def __init__(self, cfg: TextConfig, encoder_width: int) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg, encoder_width)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # BERT's additive mask: 0 where a token is attended to, −10000 on padding (as the reference computes it).
        bias = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0).to(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, bias, image)
        return x


class ImageRewardModel(nn.Module):
    """Image tokens → text states conditioned on them → reward of the [CLS] state, standardised."""

    MEAN = 0.16717362830052426
    STD = 1.0333394966054072

    def __init__(self, vision: VisionConfig, text: TextConfig) -> None:
        super().__init__()
        self.visual = vision_transformer(vision)
        self.text = MultimodalTextEncoder(text, vision.embed_dim)
        self.head = RewardMLP(text.hidden_size)

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image = self.visual.forward_features(pixels)
        states = self.text(input_ids, attention_mask, image)
        reward = self.head(states[:, 0, :])
        return (reward.float().squeeze(-1) - self.MEAN) / self.STD
