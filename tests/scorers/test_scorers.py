"""The scorer interface on the tiny variants: what stage 1 and evaluation rely on, and every way input can be bad."""

from __future__ import annotations

import io
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.numerics import assert_close_at_scale
from PIL import Image

from pipeline.config import ScorerSpec, load_config
from pipeline.models.synthetic import synthetic_images
from scorers import ScorerError, available, build_scorer
from scorers.base import resolve_dtype
from scorers.tiny import ensure_built

TINY_NAMES = ["hpsv2", "hpsv21", "clip", "pickscore", "aesthetic", "imagereward"]
TEXT_BLIND = {"aesthetic"}  # scores the image only


def _pil(n: int, seed: int = 3, size: int = 64) -> list[Image.Image]:
    arr = ((synthetic_images(n, size, seed=seed) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a.transpose(1, 2, 0)) for a in arr]


@pytest.fixture(scope="module")
def scorers():
    return {name: build_scorer(ScorerSpec(name=name, pretrained="tiny", device="cpu")) for name in TINY_NAMES}


def test_registry_lists_every_metric():
    assert set(TINY_NAMES) <= set(available())
    with pytest.raises(ScorerError, match="unknown scorer 'nope'"):
        build_scorer(ScorerSpec(name="nope"))


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_scores_are_float32_finite_and_spread(scorers, name):
    scorer = scorers[name]
    images = _pil(12)
    scores = scorer(images, ["a photo of a cat"] * 12)
    assert scores.dtype == np.float32 and scores.shape == (12,)
    assert np.all(np.isfinite(scores))
    # The demo's majority vote needs every metric to order images: no ties, spread far above float noise.
    assert len(np.unique(scores)) == 12
    assert scores.std() > 1e-3 * max(1.0, abs(scores.mean()))
    assert scorer.name == name and name in scorer.version


@pytest.mark.parametrize("name", TINY_NAMES)
def test_scores_do_not_depend_on_batch_size_or_batch_neighbours(scorers, name):
    scorer = scorers[name]
    images, prompts = _pil(5, seed=11), ["a red car", "a cat", "mountains at dawn", "a dog", "a boat"]
    whole = scorer(images, prompts)
    backbone = getattr(scorer, "backbone", None)
    if backbone is not None:
        backbone.clear_memo()  # recompute the image tower one image at a time, not from the memo
    one_by_one = np.array([scorer([im], [p])[0] for im, p in zip(images, prompts, strict=True)])
    assert_close_at_scale(
        one_by_one, whole
    )  # batched vs single calls round differently (tests/helpers/numerics.py)


@pytest.mark.parametrize("name", sorted(set(TINY_NAMES) - TEXT_BLIND))
def test_scores_depend_on_the_prompt(scorers, name):
    images = _pil(4, seed=5)
    a = scorers[name](images, ["a photo of a cat"] * 4)
    b = scorers[name](images, ["an oil painting of a mountain lake"] * 4)
    assert np.abs(a - b).max() > 1e-4


def test_tiny_builds_are_reproducible_from_a_fresh_cache(tmp_path, monkeypatch, scorers):
    monkeypatch.setenv("BDPO_CACHE", str(tmp_path))
    images, prompts = _pil(4, seed=9), ["a cat"] * 4
    for name in ("hpsv21", "imagereward"):
        rebuilt = build_scorer(ScorerSpec(name=name, pretrained="tiny", device="cpu"))
        assert str(tmp_path) in rebuilt.version  # really rebuilt, not the shared cache
        # Same weights, another module instance: equal up to float rounding (tests/helpers/numerics.py).
        assert_close_at_scale(rebuilt(images, prompts), scorers[name](images, prompts))


def test_concurrent_builders_build_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BDPO_CACHE", str(tmp_path))
    calls = []
    gate = threading.Barrier(4)

    def build(directory: Path) -> None:
        calls.append(directory)
        (directory / "weights.bin").write_bytes(b"x" * 1000)

    def worker(_):
        gate.wait()
        return ensure_built("concurrency-check", build)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    assert len(calls) == 1 and len(set(results)) == 1
    assert (results[0] / "weights.bin").stat().st_size == 1000
    leftovers = [
        p.name for p in results[0].parent.iterdir() if p.name.startswith("concurrency-check-tiny-v1.")
    ]
    assert leftovers == ["concurrency-check-tiny-v1.lock"]  # no staging directory left behind


def test_aesthetic_and_openai_clip_share_one_backbone_and_one_embedding(scorers):
    clip_l = build_scorer(
        ScorerSpec(name="clip", pretrained="tiny", device="cpu", options={"arch": "ViT-L-14"})
    )
    aesthetic = scorers["aesthetic"]
    assert clip_l.backbone is aesthetic.backbone
    images = _pil(6, seed=21)
    before = aesthetic.backbone.images_encoded
    aesthetic(images, ["x"] * 6)
    clip_l(images, ["a cat"] * 6)
    assert aesthetic.backbone.images_encoded - before == 6  # the vision tower ran once per image


# ---- bad input ------------------------------------------------------------------------------------------------


def test_mismatched_lengths_empty_prompt_and_non_images_are_errors(scorers):
    scorer = scorers["hpsv21"]
    images = _pil(2)
    with pytest.raises(ScorerError, match="2 images but 1 prompts"):
        scorer(images, ["a"])
    with pytest.raises(ScorerError, match="item 1 has an empty prompt"):
        scorer(images, ["a cat", "   "])
    with pytest.raises(ScorerError, match="item 0 is ndarray, not a PIL image"):
        scorer([np.zeros((8, 8, 3))], ["a cat"])


def test_corrupt_image_is_an_error(scorers):
    buffer = io.BytesIO()
    _pil(1)[0].save(buffer, format="PNG")
    truncated = Image.open(io.BytesIO(buffer.getvalue()[:200]))
    with pytest.raises(ScorerError, match="item 0 is a corrupt image"):
        scorers["clip"]([truncated], ["a cat"])


@pytest.mark.parametrize("mode", ["L", "P", "CMYK"])
def test_non_rgb_images_are_converted(scorers, mode):
    rgb = _pil(1, seed=4)[0]
    other = rgb.convert(mode)
    expected = scorers["pickscore"]([other.convert("RGB")], ["a cat"])
    np.testing.assert_allclose(scorers["pickscore"]([other], ["a cat"]), expected, atol=1e-6)


def test_rgba_is_composited_on_white(scorers):
    rgba = _pil(1, seed=4)[0].convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.split()[-1])
    np.testing.assert_allclose(
        scorers["imagereward"]([rgba], ["a cat"]), scorers["imagereward"]([flat], ["a cat"]), atol=1e-6
    )


def test_high_bit_depth_images_are_refused_not_clipped(scorers):
    image = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.int32), mode="I")
    with pytest.raises(ScorerError, match="image mode 'I'"):
        scorers["hpsv2"]([image], ["a cat"])


# ---- weights -------------------------------------------------------------------------------------------------


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ScorerError, match=r"checkpoint file not found: .*HPS_v2_compressed\.pt"):
        build_scorer(ScorerSpec(name="hpsv2", pretrained=str(tmp_path), device="cpu"))
    with pytest.raises(ScorerError, match=r"not found: .*nothing\.pth"):
        build_scorer(ScorerSpec(name="aesthetic", pretrained=str(tmp_path / "nothing.pth"), device="cpu"))


@pytest.mark.parametrize(
    ("name", "repo", "filename"),
    [
        ("hpsv21", "xswu/HPSv2", "HPS_v2.1_compressed.pt"),
        ("aesthetic", "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"),
        ("imagereward", "THUDM/ImageReward", "med_config.json"),
    ],
)
def test_default_weights_come_from_the_hub(tmp_path, monkeypatch, name, repo, filename):
    """Offline with an empty hub cache, the default spec fails on exactly the hub file it would download."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ScorerError, match=re.escape(f"cannot download {filename!r} from hub repo {repo!r}")):
        build_scorer(ScorerSpec(name=name, device="cpu"))


def test_aesthetic_head_saved_as_bare_sequential_loads(tmp_path, scorers):
    state = torch.load(scorers["aesthetic"].weights, weights_only=True)
    bare = tmp_path / "head.pth"
    torch.save({k.removeprefix("layers."): v for k, v in state.items()}, bare)
    scorer = build_scorer(
        ScorerSpec(name="aesthetic", pretrained=str(bare), device="cpu", options={"backbone": "tiny"})
    )
    images = _pil(3, seed=1)
    np.testing.assert_allclose(scorer(images, ["x"] * 3), scorers["aesthetic"](images, ["x"] * 3), atol=1e-6)


def test_checkpoint_with_wrong_keys_names_file_and_keys(tmp_path, scorers):
    source = Path(scorers["hpsv2"].weights).parent
    broken = tmp_path / "hps"
    shutil.copytree(source, broken)
    ckpt = broken / "HPS_v2_compressed.pt"
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"].pop("ln_final.weight")
    state["state_dict"]["extra.head"] = torch.zeros(1)
    torch.save(state, ckpt)
    with pytest.raises(ScorerError) as err:
        build_scorer(ScorerSpec(name="hpsv2", pretrained=str(broken), device="cpu"))
    message = str(err.value)
    assert str(ckpt) in message and "ln_final.weight" in message and "extra.head" in message


def test_imagereward_key_mapping_rejects_unknown_keys(tmp_path, scorers):
    source = Path(scorers["imagereward"].weights).parent
    broken = tmp_path / "ir"
    shutil.copytree(source, broken)
    ckpt = broken / "ImageReward.pt"
    state = torch.load(ckpt, weights_only=True)
    state["blip.itm_head.weight"] = torch.zeros(2, 32)
    torch.save(state, ckpt)
    with pytest.raises(ScorerError, match=r"ImageReward\.pt has keys outside .*blip\.itm_head\.weight"):
        build_scorer(ScorerSpec(name="imagereward", pretrained=str(broken), device="cpu"))


def test_pickscore_checkpoint_of_another_shape_is_an_error(tmp_path, scorers):
    from transformers import CLIPConfig, CLIPModel

    from scorers.pickscore import TINY_CONFIG

    cfg = dict(TINY_CONFIG, projection_dim=16)
    CLIPModel(CLIPConfig(**cfg)).save_pretrained(tmp_path / "model")
    config = (Path(scorers["pickscore"].weights) / "config.json").read_text()
    (tmp_path / "model" / "config.json").write_text(config)  # config says 32, weights hold 16
    with pytest.raises(ScorerError, match="does not fit CLIPModel"):
        build_scorer(
            ScorerSpec(
                name="pickscore",
                pretrained=str(tmp_path / "model"),
                device="cpu",
                options={"processor": scorers["pickscore"].weights},
            )
        )


def test_dtype_follows_the_device():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_tiny_config_lists_five_tiny_scorers_that_build():
    cfg = load_config("configs/tiny.yaml")
    specs = cfg.scoring.scorers
    names = [s.name for s in specs]
    assert len(names) == 5 and len(names) % 2 == 1
    assert {"clip", "pickscore", "aesthetic", "imagereward"} <= set(names)
    assert {"hpsv2", "hpsv21"} & set(names)
    assert all(s.pretrained == "tiny" for s in specs)
    images = _pil(3, seed=8)
    for spec in specs:
        assert build_scorer(spec)(images, ["a cat"] * 3).shape == (3,)


# ---- slow: full-size architectures, GPU half precision -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY_NAMES)
def test_random_full_builds_the_real_architecture(name):
    """`pretrained: random-full` is what the GPU benchmark uses: the real sizes, random weights, no download."""
    scorer = build_scorer(ScorerSpec(name=name, pretrained="random-full", batch_size=2))
    model = getattr(scorer, "model", None) or scorer.backbone.model
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 300e6  # ViT-H-14 ≈ 986M, CLIP-H ≈ 986M, ViT-L/14 ≈ 428M, BLIP-L + BERT ≈ 450M
    scores = scorer(_pil(2, size=96), ["a cat", "a dog"])
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (float16 path)")
@pytest.mark.parametrize("name", TINY_NAMES)
def test_float16_on_gpu_agrees_with_float32_on_cpu(name):
    gpu = build_scorer(ScorerSpec(name=name, pretrained="tiny", device="cuda"))
    assert gpu.dtype == torch.float16
    cpu = build_scorer(ScorerSpec(name=name, pretrained="tiny", device="cpu"))
    images, prompts = _pil(16, seed=2), ["a photo of a cat"] * 16
    half, full = gpu(images, prompts), cpu(images, prompts)
    spread = full.std()
    assert np.abs(half - full).max() < 0.05 * spread
