"""SDXL in float16: the VAE decodes in float32 when its config asks (`force_upcast`), as diffusers does, a separate
fp16-safe VAE can be configured, and an image that still comes out non-finite never becomes a silent candidate."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from helpers.configs import tiny_config
from helpers.stage1_scorers import make_scorer

from pipeline.config import GenerationSection, ModelSection
from pipeline.models.diffusion import generate, load_pipeline
from pipeline.models.zoo import resolve_pretrained
from pipeline.paths import RunPaths
from pipeline.schema import make_prompt_id
from pipeline.stage1 import Stage1Error
from pipeline.stage1.batches import ERROR_COLUMN, GenerateBatch, ScoreBatch
from pipeline.stage1.plan import plan_items
from pipeline.stage1.store import CandidateStore

GEN = GenerationSection(height=32, width=32, num_inference_steps=2, guidance_scale=5.0)
# The real SDXL VAE's decoder activations exceed float16's range (65504); the tiny one's do not. Scaling its first
# decoder convolution by this factor makes them do so (conv_in outputs ~1e5), while a float32 decode stays finite
# (the group norms that follow divide the scale out).
OVERFLOW = 1e5


class OverflowingSDXL:
    """A picklable loader (stage 1's `model_ref` hook): the tiny SDXL in float16 with an overflowing VAE."""

    def __init__(self, force_upcast: bool) -> None:
        self.force_upcast = force_upcast

    def __call__(self) -> DiffusionPipeline:
        pipe = DiffusionPipeline.from_pretrained(resolve_pretrained("tiny/sdxl"))
        with torch.no_grad():
            pipe.vae.decoder.conv_in.weight.mul_(OVERFLOW)
            pipe.vae.decoder.conv_in.bias.mul_(OVERFLOW)
        pipe.vae.register_to_config(force_upcast=self.force_upcast)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(torch.float16)


def decoder_input_dtypes(pipe) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    pipe.vae.decoder.register_forward_pre_hook(lambda _module, args: seen.append(args[0].dtype))
    return seen


def test_float16_sdxl_with_force_upcast_decodes_in_float32_and_stays_finite():
    pipe = OverflowingSDXL(force_upcast=True)()
    assert pipe.unet.dtype == pipe.vae.dtype == torch.float16
    seen = decoder_input_dtypes(pipe)
    out = generate(pipe, ["a red fox", "a lighthouse"], [0, 1], GEN)
    assert seen == [torch.float32]
    assert out.problems == [None, None]
    assert np.isfinite(out.latents).all()
    pixels = np.stack([np.asarray(im, dtype=np.float32) for im in out.images])
    assert pixels.std() > 1.0, "not a blank image"
    assert pipe.unet.dtype == torch.float16  # only the VAE is upcast


def test_a_float16_decode_that_overflows_is_reported_per_image():
    pipe = OverflowingSDXL(force_upcast=False)()
    seen = decoder_input_dtypes(pipe)
    out = generate(pipe, ["a red fox", "a lighthouse"], [0, 1], GEN)
    assert seen == [torch.float16]
    assert out.problems == ["non-finite decoded image (NaN/inf)"] * 2


def stage1_items(n_prompts: int = 2) -> dict:
    prompts = [(make_prompt_id(p), p, "test") for p in ("a red fox", "a lighthouse")[:n_prompts]]
    return {k: np.asarray(v) for k, v in plan_items(prompts, model_tag="overflow", seeds=[0, 1]).items()}


def test_stage1_stops_on_non_finite_images_by_default(tmp_path):
    cfg = tiny_config(tmp_path, "generation.num_inference_steps=2")
    actor = GenerateBatch(cfg, model_ref=OverflowingSDXL(force_upcast=False))
    with pytest.raises(Stage1Error, match=r"4 image\(s\) with non-finite decoded image.*image ids"):
        actor(stage1_items())


def test_stage1_quarantines_non_finite_images_when_asked(tmp_path):
    cfg = tiny_config(tmp_path, "generation.num_inference_steps=2", "scoring.on_error=quarantine")
    table = GenerateBatch(cfg, model_ref=OverflowingSDXL(force_upcast=False))(stage1_items())
    assert table.column(ERROR_COLUMN).to_pylist() == ["non-finite decoded image (NaN/inf)"] * 4
    scored = ScoreBatch(cfg.scoring.scorers, "quarantine", scorer_factory=make_scorer)(table)
    paths = RunPaths(cfg.output_dir)
    store = CandidateStore(paths, [s.name for s in cfg.scoring.scorers])
    store.write(scored)
    assert (store.n_written, store.n_errors) == (0, 4)
    errors = pq.read_table(paths.errors).column("error").to_pylist()
    assert errors == ["non-finite decoded image (NaN/inf)"] * 4
    # With upcasting the same items are good candidates.
    good = GenerateBatch(cfg, model_ref=OverflowingSDXL(force_upcast=True))(stage1_items())
    assert good.column(ERROR_COLUMN).null_count == 4


def test_a_separate_vae_replaces_the_models_own(tmp_path):
    """`model.vae`: a VAE directory of its own (as madebyollin/sdxl-vae-fp16-fix) or a pipeline's `vae/`."""
    own = AutoencoderKL.from_pretrained(resolve_pretrained("tiny/sdxl"), subfolder="vae")
    with torch.no_grad():
        own.decoder.conv_out.weight.mul_(0.5)
    own.register_to_config(force_upcast=False)
    own.save_pretrained(tmp_path / "fp16-safe-vae")
    pipe = load_pipeline(
        ModelSection(pretrained="tiny/sdxl", vae=str(tmp_path / "fp16-safe-vae")), device="cpu"
    )
    assert pipe.vae.config.force_upcast is False
    torch.testing.assert_close(pipe.vae.decoder.conv_out.weight, own.decoder.conv_out.weight, rtol=0, atol=0)
    from_pipeline_dir = load_pipeline(
        ModelSection(pretrained="tiny/sdxl", vae=resolve_pretrained("tiny/sd15")), device="cpu"
    )
    sd15_vae = AutoencoderKL.from_pretrained(resolve_pretrained("tiny/sd15"), subfolder="vae")
    torch.testing.assert_close(
        from_pipeline_dir.vae.decoder.conv_out.weight, sd15_vae.decoder.conv_out.weight, rtol=0, atol=0
    )
    with pytest.raises(FileNotFoundError, match="model.vae"):
        load_pipeline(ModelSection(pretrained="tiny/sdxl", vae=str(tmp_path / "missing")), device="cpu")
