"""The Diffusion-DPO loss against hand computations of eq. 14 and the diffusers examples' β conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.architectures import scheduler_for
from trainer.loss import (
    add_noise,
    beta_from_diffusers,
    diffusion_target,
    dpo_loss,
    per_sample_mse,
)

# Fixed per-pair MSEs: policy winner/loser, reference winner/loser.
PW = [0.10, 0.30, 0.25, 0.50]
PL = [0.20, 0.10, 0.25, 0.40]
RW = [0.15, 0.20, 0.25, 0.45]
RL = [0.15, 0.20, 0.25, 0.45]


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def _eq14_by_hand(beta: float) -> list[float]:
    """−log σ(−β/2 · ((pw − pl) − (rw − rl))), one pair at a time with the math module."""
    out = []
    for pw, pl, rw, rl in zip(PW, PL, RW, RL, strict=True):
        x = -beta / 2 * ((pw - pl) - (rw - rl))
        out.append(-math.log(1 / (1 + math.exp(-x))))
    return out


@pytest.mark.parametrize("beta", [1.0, 20.0, 500.0])
def test_sigmoid_loss_matches_eq14_by_hand(beta):
    out = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta)
    expected = _eq14_by_hand(beta)
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)


def test_metrics_by_hand():
    beta = 10.0
    out = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta)
    margins = [-beta / 2 * ((pw - pl) - (rw - rl)) for pw, pl, rw, rl in zip(PW, PL, RW, RL, strict=True)]
    # margins: +0.5, −1.0, 0 (tie), −0.5 → accuracy (1 + 0.5) / 4
    assert margins[2] == 0.0
    assert out.metrics["implicit_acc"].item() == pytest.approx(1.5 / 4)
    assert out.metrics["reward_margin"].item() == pytest.approx(sum(margins) / 4)
    rw = [-beta / 2 * (p - r) for p, r in zip(PW, RW, strict=True)]
    rl = [-beta / 2 * (p - r) for p, r in zip(PL, RL, strict=True)]
    assert out.metrics["reward_w"].item() == pytest.approx(sum(rw) / 4)
    assert out.metrics["reward_l"].item() == pytest.approx(sum(rl) / 4)
    assert out.metrics["reward_w"].item() - out.metrics["reward_l"].item() == pytest.approx(
        out.metrics["reward_margin"].item()
    )
    assert out.metrics["policy_mse_w"].item() == pytest.approx(sum(PW) / 4)
    assert out.metrics["ref_mse_l"].item() == pytest.approx(sum(RL) / 4)


def test_hinge_and_ipo_by_hand():
    beta = 8.0
    margins = [-beta / 2 * ((pw - pl) - (rw - rl)) for pw, pl, rw, rl in zip(PW, PL, RW, RL, strict=True)]
    hinge = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta, "hinge").loss.item()
    assert hinge == pytest.approx(sum(max(0.0, 1 - m) for m in margins) / 4)
    # trl's ipo: (logits − 1/(2β))² with logits = policy log-ratio − reference log-ratio = margin / β
    ipo = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta, "ipo").loss.item()
    assert ipo == pytest.approx(sum((m / beta - 1 / (2 * beta)) ** 2 for m in margins) / 4)


def test_diffusers_sd_script_convention_maps_to_our_beta():
    """train_diffusion_dpo.py: loss = −log σ(beta_dpo · (ref_diff − model_diff)) — no ½, so β = 2·beta_dpo."""
    beta_dpo = 2500.0
    pw, pl, rw, rl = _t(PW) * 1e-3, _t(PL) * 1e-3, _t(RW) * 1e-3, _t(RL) * 1e-3
    logits = (rw - rl) - (pw - pl)
    theirs = -F.logsigmoid(beta_dpo * logits).mean()
    ours = dpo_loss(pw, pl, rw, rl, beta_from_diffusers(beta_dpo, "sd")).loss
    assert beta_from_diffusers(beta_dpo, "sd") == 5000.0
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_diffusers_sdxl_script_convention_maps_to_our_beta():
    """train_diffusion_dpo_sdxl.py: inside = −0.5·beta_dpo·(model_diff − ref_diff) — our β is their beta_dpo."""
    beta_dpo = 5000.0
    pw, pl, rw, rl = _t(PW) * 1e-3, _t(PL) * 1e-3, _t(RW) * 1e-3, _t(RL) * 1e-3
    inside = -0.5 * beta_dpo * ((pw - pl) - (rw - rl))
    theirs = -F.logsigmoid(inside).mean()
    ours = dpo_loss(pw, pl, rw, rl, beta_from_diffusers(beta_dpo, "sdxl")).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="script"):
        beta_from_diffusers(1.0, "sd3")  # type: ignore[arg-type]


def test_identical_policy_and_reference_give_log2_and_half_accuracy():
    x = _t(PW)
    out = dpo_loss(x, _t(PL), x, _t(PL), beta=123.0)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert out.metrics["implicit_acc"].item() == 0.5


def test_gradient_lowers_winner_error_and_raises_loser_error():
    pw = _t(PW).requires_grad_(True)
    pl = _t(PL).requires_grad_(True)
    dpo_loss(pw, pl, _t(RW), _t(RL), beta=50.0).loss.backward()
    assert (pw.grad > 0).all(), "descending the loss must lower the winner's error"
    assert (pl.grad < 0).all(), "and raise the loser's"


def test_confidence_weights_scale_each_pair():
    w = _t([1.0, 0.0, 0.5, 2.0])
    out = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), 10.0, weights=w)
    per_pair = _eq14_by_hand(10.0)
    assert out.loss.item() == pytest.approx(sum(a * b for a, b in zip(per_pair, w.tolist(), strict=True)) / 4)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), 1.0, "kto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), 0.0)
    with pytest.raises(ValueError, match="prediction type"):
        diffusion_target("sample", _t(PW), _t(PW), _t(PW))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noise_and_target_match_the_diffusers_scheduler(prediction_type):
    """Our pure forward process and target agree with DDIMScheduler.add_noise / get_velocity."""
    sched = scheduler_for(prediction_type)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=gen)
    eps = torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 500, 999])
    alpha_bar = sched.alphas_cumprod[t]
    torch.testing.assert_close(add_noise(x0, eps, alpha_bar), sched.add_noise(x0, eps, t))
    expected = eps if prediction_type == "epsilon" else sched.get_velocity(x0, eps, t)
    torch.testing.assert_close(diffusion_target(prediction_type, x0, eps, alpha_bar), expected)


def test_per_sample_mse():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2)
    torch.testing.assert_close(per_sample_mse(pred, target), torch.tensor([1.0, 4.0]))


@pytest.mark.parametrize("lam", [0.5, 50.0])
def test_dpop_penalty_by_hand(lam):
    """DPO-Positive: −log σ(h − β/2·λ·max(0, pw − rw)), pair by pair with the math module."""
    beta = 10.0
    out = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta, dpop_lambda=lam)
    expected = []
    for pw, pl, rw, rl in zip(PW, PL, RW, RL, strict=True):
        h = -beta / 2 * ((pw - pl) - (rw - rl)) - beta / 2 * lam * max(0.0, pw - rw)
        expected.append(math.log1p(math.exp(-h)))
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    plain = dpo_loss(_t(PW), _t(PL), _t(RW), _t(RL), beta)
    # the metrics describe DPO's own margin, whatever the penalty
    assert out.metrics["reward_margin"].item() == plain.metrics["reward_margin"].item()
    assert out.metrics["winner_worse"].item() == pytest.approx(
        sum(pw > rw for pw, rw in zip(PW, RW, strict=True)) / len(PW)
    )


def test_dpop_pushes_winner_error_down_harder_only_where_it_rose():
    beta, lam = 10.0, 50.0
    rw = _t(RW)
    grads = []
    for lam_ in (0.0, lam):
        pw = _t(PW).requires_grad_(True)
        dpo_loss(pw, _t(PL), rw, _t(RL), beta, dpop_lambda=lam_).loss.backward()
        grads.append(pw.grad)
    rose = _t(PW) > rw
    assert rose.any() and (~rose).any(), "the fixture must have both kinds of pair"
    assert (grads[1][rose] > grads[0][rose]).all()
    torch.testing.assert_close(grads[1][~rose], grads[0][~rose])
    with pytest.raises(ValueError, match="dpop_lambda"):
        dpo_loss(_t(PW), _t(PL), rw, _t(RL), beta, dpop_lambda=-1.0)
