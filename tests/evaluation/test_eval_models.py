"""Loading the compared models: a UNet-only checkpoint applied to the base (the public Diffusion-DPO layout),
whole pipelines, and one sampler for every model of an evaluation."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
from helpers.configs import run_config

from pipeline.config import ModelSection
from pipeline.evaluation.models import TunedModel, model_reference, parse_tuned, tuned_tag
from pipeline.models.diffusion import load_pipeline
from pipeline.stage1.batches import load_generation_pipeline


@pytest.fixture(scope="module")
def tuned_unet_dir(tmp_path_factory):
    """The tiny SD1.5 UNet, moved a little (a "tuned" UNet), saved alone in the mhdang/dpo-sd1.5 layout."""
    root = tmp_path_factory.mktemp("dpo-sd15")
    unet = load_pipeline(ModelSection(pretrained="tiny/sd15"), device="cpu").unet
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    return root


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_unet_only_checkpoint_is_applied_to_the_base(tmp_path, tuned_unet_dir):
    cfg = run_config(tmp_path, "model.pretrained=tiny/sd15")
    model = parse_tuned(f"dpo={tuned_unet_dir}")
    assert model.unet == str(tuned_unet_dir)
    pipe = model_reference(model, cfg)()
    saved = UNet2DConditionModel.from_pretrained(tuned_unet_dir / "unet")
    base = load_pipeline(cfg.model, device="cpu")
    assert _same_weights(pipe.unet, saved) and not _same_weights(pipe.unet, base.unet)
    assert _same_weights(pipe.text_encoder, base.text_encoder) and _same_weights(pipe.vae, base.vae)
    # A UNet's own directory works too; the tag follows the files and the base they are applied to.
    direct = model_reference(TunedModel("dpo", unet=str(tuned_unet_dir / "unet")), cfg)()
    assert _same_weights(direct.unet, saved)
    assert tuned_tag(model, cfg).startswith("unet:") and tuned_tag(model, cfg).endswith("+tiny/sd15")


def test_a_unet_of_another_family_is_refused(tmp_path):
    xl_unet = load_pipeline(ModelSection(pretrained="tiny/sdxl"), device="cpu").unet
    xl_unet.save_pretrained(tmp_path / "xl" / "unet", safe_serialization=True)
    cfg = run_config(tmp_path, "model.pretrained=tiny/sd15")
    with pytest.raises(ValueError, match="cross-attention width .* another model family"):
        model_reference(parse_tuned(str(tmp_path / "xl")), cfg)()


def test_every_model_samples_with_the_configured_scheduler(tmp_path, tuned_unet_dir):
    cfg = run_config(tmp_path, "model.pretrained=tiny/sd15", "generation.scheduler=euler")
    by_path = load_generation_pipeline(cfg, None, device="cpu")
    by_loader = load_generation_pipeline(cfg, model_reference(parse_tuned(str(tuned_unet_dir)), cfg), "cpu")
    assert isinstance(by_path.scheduler, EulerDiscreteScheduler)
    assert isinstance(by_loader.scheduler, EulerDiscreteScheduler)
