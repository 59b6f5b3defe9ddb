"""The Diffusion-DPO loss as pure functions on tensors: no model, no optimizer, easy to check by hand.

Convention (one β everywhere in this project): `beta` is the β of Wallace et al. 2023, eq. 14, and enters the
sigmoid as β/2:

    h = −β/2 · ((mse_w − mse_l)_policy − (mse_w − mse_l)_reference)
    sigmoid: loss = −log σ(h)        hinge: loss = relu(1 − h)        ipo: loss = (h/β − 1/(2β))²

`h` is the implicit reward margin (reward of the winner minus reward of the loser); implicit accuracy is the
fraction of pairs with h > 0 (ties count ½). The ipo variant is trl's `(logits − 1/(2β))²` with
logits = h/β = ½·(ref_diff − policy_diff), so all three variants read the same β.

DPO can raise the margin by making the *winner* worse too, as long as the loser gets worse faster ("likelihood
displacement"); on a small model that shows as a denoiser that degrades on every image. DPO-Positive (Pal et al.
2024, "Smaug") adds a penalty inside the sigmoid whenever the policy fits the winner worse than the
reference: h_dpop = h − β/2 · λ · max(0, mse_w,policy − mse_w,reference). λ = 0 is plain Diffusion-DPO.

The diffusers research examples spell β differently; `beta_from_diffusers` maps their `beta_dpo` to ours:
`train_diffusion_dpo.py` multiplies the logits by `beta_dpo` with no ½ (so β = 2·beta_dpo), while
`train_diffusion_dpo_sdxl.py` (and the original Diffusion-DPO code) uses `−0.5·beta_dpo` (so β = beta_dpo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "hinge", "ipo"]
PredictionType = Literal["epsilon", "v_prediction"]
LOSS_TYPES: tuple[LossType, ...] = ("sigmoid", "hinge", "ipo")


@dataclass
class DPOLoss:
    """The scalar loss to back-propagate plus detached per-batch metrics to log."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def beta_from_diffusers(beta_dpo: float, script: Literal["sd", "sdxl"]) -> float:
    """Our β for a diffusers example's `--beta_dpo`: the SD script has no ½ (β = 2·beta_dpo), the SDXL one has."""
    if script == "sd":
        return 2.0 * beta_dpo
    if script == "sdxl":
        return float(beta_dpo)
    raise ValueError(f"script must be 'sd' or 'sdxl', got {script!r}")


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values (B,) broadcast against a (B, ...) tensor."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1))).to(like.dtype)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Forward diffusion x_t = √ᾱ·x₀ + √(1−ᾱ)·ε with ᾱ given per sample (B,)."""
    a = _expand(alpha_bar, latents)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def diffusion_target(
    prediction_type: str, latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict: ε for epsilon models, v = √ᾱ·ε − √(1−ᾱ)·x₀ for v-prediction."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = _expand(alpha_bar, latents)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(f"unsupported prediction type {prediction_type!r}; expected epsilon or v_prediction")


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (B,), computed in float32 whatever the autocast dtype."""
    err = (prediction.float() - target.float()).pow(2)
    return err.mean(dim=tuple(range(1, err.ndim)))


def dpo_loss(
    policy_mse_w: torch.Tensor,
    policy_mse_l: torch.Tensor,
    ref_mse_w: torch.Tensor,
    ref_mse_l: torch.Tensor,
    beta: float,
    loss_type: LossType = "sigmoid",
    weights: torch.Tensor | None = None,
    dpop_lambda: float = 0.0,
) -> DPOLoss:
    """Diffusion-DPO on per-pair MSEs (each (B,)); `weights` (B,), e.g. vote confidence, scale each pair's loss.

    The weighted loss is mean(w·ℓ), not a weighted average, so a batch of weak pairs moves the model less and
    shards of equal size on several processes average to the single-process value.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if dpop_lambda < 0:
        raise ValueError(f"dpop_lambda must be >= 0, got {dpop_lambda}")
    policy_diff = policy_mse_w - policy_mse_l
    ref_diff = ref_mse_w - ref_mse_l
    margin = -0.5 * beta * (policy_diff - ref_diff)  # h: the implicit reward margin
    winner_penalty = torch.relu(policy_mse_w - ref_mse_w)
    objective = margin - 0.5 * beta * dpop_lambda * winner_penalty if dpop_lambda else margin
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(objective)
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - objective)
    elif loss_type == "ipo":
        losses = (objective / beta - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    if weights is not None:
        losses = losses * weights.to(losses.dtype)
    loss = losses.mean()
    with torch.no_grad():
        accuracy = (margin > 0).float().mean() + 0.5 * (margin == 0).float().mean()
        metrics = {
            "loss": loss.detach(),
            "implicit_acc": accuracy,
            "reward_margin": margin.detach().mean(),
            "reward_w": (-0.5 * beta * (policy_mse_w - ref_mse_w)).detach().mean(),
            "reward_l": (-0.5 * beta * (policy_mse_l - ref_mse_l)).detach().mean(),
            "policy_mse_w": policy_mse_w.detach().mean(),
            "policy_mse_l": policy_mse_l.detach().mean(),
            "ref_mse_w": ref_mse_w.detach().mean(),
            "ref_mse_l": ref_mse_l.detach().mean(),
            "winner_worse": (winner_penalty > 0).float().mean(),
        }
    return DPOLoss(loss=loss, metrics=metrics)
