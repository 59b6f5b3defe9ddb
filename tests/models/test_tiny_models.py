"""The embedded tiny models: real architectures, a real CLIP tokenizer, saved and loaded like hub models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from helpers.numerics import assert_close_at_scale, assert_images_close
from transformers import CLIPTokenizer

from pipeline.config import GenerationSection, ModelSection
from pipeline.models.architectures import ARCHITECTURES, build_unet
from pipeline.models.clip_tokenizer import write_clip_tokenizer
from pipeline.models.diffusion import generate, load_pipeline
from pipeline.models.zoo import build_tiny_pipeline, detect_family, ensure_tiny_pipeline, resolve_pretrained

GEN = GenerationSection(height=64, width=64, num_inference_steps=4, guidance_scale=5.0)


def test_clip_tokenizer_matches_real_clip_ids(tmp_path):
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"))
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    long = tok("word " * 200, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(long) == 77 and long[-1] == 49407


@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
def test_build_save_load_round_trip_is_identical(tmp_path, family):
    """Build → save_pretrained → from_pretrained gives a pipeline with the same outputs as the built one."""
    built = build_tiny_pipeline(family, tmp_path / family)
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / family)
    assert type(reloaded) is type(built)
    for name, module in built.components.items():
        if isinstance(module, torch.nn.Module):
            a, b = module.state_dict(), reloaded.components[name].state_dict()
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), name
    # Same weights in another module instance: equal up to float rounding, not bit for bit (tests/helpers/numerics.py).
    out_a = generate(built, ["a red circle"], [7], GEN)
    out_b = generate(reloaded, ["a red circle"], [7], GEN)
    assert_close_at_scale(out_b.latents, out_a.latents)
    assert_images_close(out_b.png, out_a.png)


def test_tiny_build_is_reproducible(tmp_path):
    build_tiny_pipeline("sd15", tmp_path / "a")
    build_tiny_pipeline("sd15", tmp_path / "b")
    ua = UNet2DConditionModel.from_pretrained(tmp_path / "a" / "unet").state_dict()
    ub = UNet2DConditionModel.from_pretrained(tmp_path / "b" / "unet").state_dict()
    assert all(torch.equal(ua[k], ub[k]) for k in ua)


@pytest.mark.parametrize(
    ("family", "prediction", "pipeline_class"),
    [
        ("sd15", "epsilon", "StableDiffusionPipeline"),
        ("sd21", "v_prediction", "StableDiffusionPipeline"),
        ("sdxl", "epsilon", "StableDiffusionXLPipeline"),
    ],
)
def test_tiny_families_have_their_real_structure(family, prediction, pipeline_class):
    pipe = load_pipeline(ModelSection(pretrained=f"tiny/{family}"))
    assert type(pipe).__name__ == pipeline_class
    assert pipe.scheduler.config.prediction_type == prediction
    assert detect_family(f"tiny/{family}") == family
    assert detect_family(resolve_pretrained(f"tiny/{family}")) == family
    if family == "sdxl":
        assert pipe.unet.config.addition_embed_type == "text_time"
        assert pipe.text_encoder_2.config.projection_dim == 32
    out = generate(pipe, ["a cat", "a dog"], [0, 1], GEN)
    assert out.latents.shape == (2, 4, 16, 16)
    assert all(im.size == (64, 64) for im in out.images)


def test_same_seed_gives_identical_image_bytes():
    pipe = load_pipeline(ModelSection(pretrained="tiny/sd15"))
    a = generate(pipe, ["a red circle", "a blue square"], [3, 4], GEN)
    b = generate(pipe, ["a red circle", "a blue square"], [3, 4], GEN)
    c = generate(pipe, ["a red circle", "a blue square"], [3, 5], GEN)
    assert a.png == b.png
    assert a.png[0] == c.png[0] and a.png[1] != c.png[1]


def test_tiny_sd15_generates_a_64px_image_with_20_steps():
    """The size the README's timing is quoted for (no timed assertion: the machine is shared)."""
    pipe = load_pipeline(ModelSection(pretrained="tiny/sd15"))
    out = generate(
        pipe, ["a lighthouse at dusk"], [1], GenerationSection(height=64, width=64, num_inference_steps=20)
    )
    assert out.images[0].size == (64, 64)
    assert np.isfinite(out.latents).all()


def test_tiny_latents_are_unit_scale():
    """The tiny VAE's scaling factor is measured, so latents fed to the UNet have std ≈ 1 like SD's."""
    path = ensure_tiny_pipeline("sd15")
    pipe = DiffusionPipeline.from_pretrained(path)
    from pipeline.models.synthetic import synthetic_images

    images = torch.from_numpy(synthetic_images(32, 64, seed=99))
    with torch.no_grad():
        lat = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor
    assert 0.7 < float(lat.std()) < 1.4


@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
def test_full_size_architectures_instantiate_without_download(family):
    """Full-size UNets build from config alone (meta device: no memory), with the real parameter counts."""
    arch = ARCHITECTURES[(family, "full")]
    with torch.device("meta"):
        unet = build_unet(arch)
    n = sum(p.numel() for p in unet.parameters()) / 1e6
    expected = {"sd15": 860, "sd21": 866, "sdxl": 2567}[family]
    assert abs(n - expected) / expected < 0.01, n


def test_unknown_tiny_family_is_an_error():
    with pytest.raises(ValueError, match="unknown tiny model"):
        resolve_pretrained("tiny/sd3")


def test_missing_local_model_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        resolve_pretrained(str(tmp_path / "nothing"))


def test_clip_tokenizer_agrees_with_open_clip(tmp_path):
    """Parity with open_clip's own CLIP BPE on text with punctuation, accents, numbers and casing."""
    import open_clip

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"))
    reference = open_clip.tokenizer.SimpleTokenizer()
    for text in [
        "Hello, World!! naïve café",
        "a 3d render of 42 robots",
        "an astronaut riding a horse on mars",
    ]:
        assert tok(text).input_ids[1:-1] == reference.encode(text)
