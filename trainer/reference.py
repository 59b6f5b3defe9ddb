"""The reference model of Diffusion-DPO, and how it follows the policy (BalancedDPO's dynamic reference).

Two implementations behind one small interface (`predict`, `refresh`, `state_dict`, `load_state_dict`):
- `AdapterReference` (LoRA): the reference is a second, frozen LoRA adapter on the same UNet. A prediction switches
  the active adapter for one no-grad forward; a refresh copies (or EMA-blends) a few MB of adapter weights.
- `UNetReference` (full fine-tune): a frozen copy of the UNet; a refresh copies or blends all its weights.

`mode: none` never refreshes (vanilla Diffusion-DPO); `hard` copies the policy every `every` optimizer steps;
`ema` sets ref ← decay·ref + (1 − decay)·policy every `every` steps. Both are saved with every checkpoint
(`trainer.checkpoints`: the adapter inside the UNet's state dict, the UNet copy in its own file), so a resume
restores the reference exactly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

POLICY_ADAPTER = "policy"
REFERENCE_ADAPTER = "reference"


def should_refresh(step: int, mode: str, every: int) -> bool:
    """Refresh after optimizer step `step` (1-based) when the mode is dynamic and `every` divides it."""
    return mode != "none" and step > 0 and step % every == 0


@torch.no_grad()
def blend_(targets: Iterable[torch.Tensor], sources: Iterable[torch.Tensor], mode: str, decay: float) -> None:
    """In place: target ← source (hard) or target ← decay·target + (1 − decay)·source (ema)."""
    for tgt, src in zip(targets, sources, strict=True):
        if mode == "hard":
            tgt.copy_(src)
        elif mode == "ema":
            tgt.lerp_(src.to(tgt.dtype), 1.0 - decay)
        else:
            raise ValueError(f"cannot refresh with mode {mode!r}; expected hard or ema")


def unet_predict(unet: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict) -> torch.Tensor:
    """One UNet call with the batch's conditioning (SDXL: pooled text embedding and time ids)."""
    added = None
    if "pooled" in cond:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
    return unet(noisy, timesteps, cond["embeds"], added_cond_kwargs=added, return_dict=False)[0]


class UNetReference(nn.Module):
    """Full fine-tune: a frozen copy of the policy UNet, taken at construction."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.unet = copy.deepcopy(policy)
        self.unet.requires_grad_(False)
        self.unet.eval()

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet_predict(self.unet, noisy, timesteps, cond)

    def refresh(self, policy: nn.Module, mode: str, decay: float) -> None:
        blend_(self.unet.parameters(), policy.parameters(), mode, decay)


class AdapterReference:
    """LoRA: the `reference` adapter of the policy UNet, frozen; only the adapter weights are ever copied."""

    def __init__(self, unet: nn.Module):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.unet = unet
        self.layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        if not self.layers:
            raise ValueError("AdapterReference needs a UNet with LoRA adapters")
        self.pairs = adapter_parameter_pairs(unet)
        blend_((r for r, _ in self.pairs), (p for _, p in self.pairs), "hard", 0.0)
        self._activate(POLICY_ADAPTER)

    def _activate(self, name: str) -> None:
        for layer in self.layers:
            layer.set_adapter(name, inference_mode=name == REFERENCE_ADAPTER)

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict) -> torch.Tensor:
        """Reference forward: switch to the frozen adapter, predict, switch back (policy trainable again)."""
        self._activate(REFERENCE_ADAPTER)
        try:
            return unet_predict(self.unet, noisy, timesteps, cond)
        finally:
            self._activate(POLICY_ADAPTER)

    def refresh(self, policy: nn.Module, mode: str, decay: float) -> None:
        blend_((r for r, _ in self.pairs), (p for _, p in self.pairs), mode, decay)

    def parameters(self) -> list[torch.Tensor]:
        return [r for r, _ in self.pairs]


def adapter_parameter_pairs(unet: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(reference, policy) parameter pairs, matched by name: `….lora_A.reference.weight` ↔ `….lora_A.policy.weight`."""
    params: dict[str, torch.Tensor] = dict(unet.named_parameters())
    ref_tag, pol_tag = f".{REFERENCE_ADAPTER}.", f".{POLICY_ADAPTER}."
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, tensor in params.items():
        if ref_tag in name:
            partner = name.replace(ref_tag, pol_tag)
            if partner not in params:
                raise KeyError(f"reference adapter weight {name} has no policy twin {partner}")
            pairs.append((tensor, params[partner]))
    if not pairs:
        raise ValueError(f"no '{REFERENCE_ADAPTER}' adapter weights found in the UNet")
    return pairs


def add_lora_adapters(unet: Any, rank: int, alpha: float | None, target_modules: list[str]) -> None:
    """Freeze the UNet and add two LoRA adapters of one config: `policy` (trainable) and `reference` (frozen)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    unet.add_adapter(config, adapter_name=POLICY_ADAPTER)
    with warnings.catch_warnings():  # peft warns that a second adapter is added: that is the design
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        unet.add_adapter(copy.deepcopy(config), adapter_name=REFERENCE_ADAPTER)
    unet.set_adapter(POLICY_ADAPTER)
