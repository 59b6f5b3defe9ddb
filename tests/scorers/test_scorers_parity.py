"""Parity of our scorers with the reference implementations, offline, on the tiny random weights.

The same tiny checkpoint files that our scorers load are loaded into the reference code's own model classes
(`hpsv2`'s vendored open_clip, THUDM's ImageReward), or scored with the computation written in the PickScore README
and the LAION predictor's inference script (re-written here independently of our code). Scores must agree to 1e-4
while spreading far wider than that across images.

The reference packages are installed with `--no-deps` (their pinned dependencies are broken on current libraries)
and need small import shims, which live only in this file: stub parent packages so that heavy `__init__`s are
skipped, a `fairscale` stand-in for an unused gradient-checkpointing wrapper, and the few helpers that transformers 5
removed from `modeling_utils` / `PreTrainedModel`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ScorerSpec
from scorers import build_scorer
from scorers.preprocess import clip_center_crop, hps_pad_square

TOL = 1e-4
PROMPTS = [
    "a photo of a cat",
    "a red car parked on a wet street at night",
    "an oil painting of mountains",
    "dog",
]


def _images() -> list[Image.Image]:
    """Varied sizes and aspect ratios (HPS pads, the others crop), with real structure, not only noise."""
    rng = np.random.default_rng(7)
    sizes = [(64, 64), (96, 48), (40, 120), (300, 200), (64, 64), (50, 70)]
    out = []
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * (i + 1) % 256, yy * 3 % 256, (xx + yy) * 2 % 256], -1)
        noise = rng.integers(0, 60, (h, w, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
    return out


def _stub_package(name: str) -> types.ModuleType:
    """A parent package whose `__init__` is not run, so submodules import without its side effects."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.fail(
            f"reference package {name!r} is not installed; run `make install` (installs it --no-deps)"
        )
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    return module


# ---------------------------------------------------------------------------------------------------------- HPS


@pytest.fixture(scope="module")
def hps_reference():
    """`hpsv2.img_score` importable offline. Its wheel lacks the BPE file, so its tokenizer module is executed with
    `__file__` pointing into open_clip_torch, which ships the identical `bpe_simple_vocab_16e6.txt.gz`."""
    import open_clip

    with pytest.MonkeyPatch.context() as mp:
        for name in ("hpsv2", "hpsv2.src", "hpsv2.src.open_clip"):
            mp.setitem(sys.modules, name, _stub_package(name))
        spec = importlib.util.find_spec("hpsv2.src.open_clip.tokenizer")
        tokenizer = importlib.util.module_from_spec(spec)
        tokenizer.__file__ = str(Path(open_clip.__file__).parent / "tokenizer.py")
        mp.setitem(sys.modules, spec.name, tokenizer)
        spec.loader.exec_module(tokenizer)
        del sys.modules["hpsv2.src.open_clip"]  # now import the real package __init__
        clint = types.ModuleType("clint")
        clint.textui = types.ModuleType("clint.textui")
        clint.textui.progress = None
        mp.setitem(sys.modules, "clint", clint)
        mp.setitem(sys.modules, "clint.textui", clint.textui)
        import hpsv2.img_score as img_score
        import hpsv2.src.open_clip as ref_open_clip

        yield img_score, ref_open_clip


@pytest.mark.parametrize("name", ["hpsv2", "hpsv21"])
def test_hps_matches_hpsv2_score(hps_reference, name):
    img_score, ref_open_clip = hps_reference
    ours = build_scorer(ScorerSpec(name=name, pretrained="tiny", device="cpu"))
    ckpt = Path(ours.weights)
    import json

    cfg = json.loads((ckpt.parent / "open_clip_config.json").read_text())["model_cfg"]
    model = ref_open_clip.model.CLIP(**cfg, output_dict=True)
    preprocess = ref_open_clip.transform.image_transform(224, is_train=False, resize_longest_max=True)
    images = _images()
    img_score.model_dict.clear()
    img_score.model_dict.update(model=model, preprocess_val=preprocess)
    img_score.device = "cpu"
    for prompt in PROMPTS[:2]:
        # The package's own `score()`: it loads checkpoint['state_dict'] strictly into its model class.
        theirs = np.array(img_score.score(images, prompt, cp=str(ckpt)), dtype=np.float64)
        mine = ours(images, [prompt] * len(images))
        assert np.abs(mine - theirs).max() < TOL, (mine, theirs)
        assert np.ptp(theirs) > 100 * TOL  # the comparison is not between constants


def test_hps_preprocessing_matches_reference(hps_reference):
    _, ref_open_clip = hps_reference
    preprocess = ref_open_clip.transform.image_transform(224, is_train=False, resize_longest_max=True)
    for image in _images():
        theirs = preprocess(image)
        mine = hps_pad_square(image)
        assert mine.shape == theirs.shape == (3, 224, 224)
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------------------- ImageReward


class _OfflineBertTokenizer:
    """Stands in for `transformers.BertTokenizer` inside BLIP's `init_tokenizer`: `bert-base-uncased` is not
    available offline, so it resolves to the tiny vocabulary our tiny checkpoint was built with."""

    directory: Path

    @classmethod
    def from_pretrained(cls, name: str):
        from transformers import BertTokenizer

        class Tokenizer(BertTokenizer):  # transformers 5 dropped this attribute, which init_tokenizer reads
            @property
            def additional_special_tokens_ids(self) -> list[int]:
                return [self.convert_tokens_to_ids("[ENC]")]

        assert name == "bert-base-uncased"
        return Tokenizer.from_pretrained(cls.directory)


@pytest.fixture(scope="module")
def imagereward_reference():
    from transformers import modeling_utils, pytorch_utils

    with pytest.MonkeyPatch.context() as mp:
        for name in ("ImageReward", "ImageReward.models"):
            mp.setitem(sys.modules, name, _stub_package(name))
        checkpoint = types.ModuleType("fairscale.nn.checkpoint.checkpoint_activations")
        checkpoint.checkpoint_wrapper = lambda module, **kw: module  # only used for training
        for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
            mp.setitem(sys.modules, name, types.ModuleType(name))
        mp.setitem(sys.modules, checkpoint.__name__, checkpoint)
        # transformers 5 moved or dropped these; the forward pass uses only the first.
        mp.setattr(
            modeling_utils, "apply_chunking_to_forward", pytorch_utils.apply_chunking_to_forward, False
        )
        mp.setattr(modeling_utils, "prune_linear_layer", pytorch_utils.prune_linear_layer, False)
        mp.setattr(modeling_utils, "find_pruneable_heads_and_indices", None, False)
        import ImageReward.ImageReward as reference
        from ImageReward.models.BLIP import blip, blip_pretrain, med, vit

        def get_head_mask(self, head_mask, num_layers):  # transformers 4's behaviour for head_mask=None
            assert head_mask is None
            return [None] * num_layers

        def invert_attention_mask(self, mask):
            return (1.0 - mask[:, None, None, :].to(self.dtype)) * torch.finfo(self.dtype).min

        # transformers 5's init_weights expects post_init() to have run; the weights come from the checkpoint.
        mp.setattr(med.BertModel, "init_weights", lambda self: setattr(self, "all_tied_weights_keys", {}))
        mp.setattr(med.BertModel, "get_head_mask", get_head_mask, False)
        mp.setattr(med.BertModel, "invert_attention_mask", invert_attention_mask, False)
        mp.setattr(blip, "BertTokenizer", _OfflineBertTokenizer)
        yield reference, blip_pretrain, vit


def test_imagereward_matches_reference_model(imagereward_reference):
    import json

    reference, blip_pretrain, vit = imagereward_reference
    ours = build_scorer(ScorerSpec(name="imagereward", pretrained="tiny", device="cpu"))
    directory = Path(ours.weights).parent
    vcfg = json.loads((directory / "vision_config.json").read_text())
    _OfflineBertTokenizer.directory = directory / "tokenizer"

    def tiny_vit(*args, **kwargs):  # their VisionTransformer class, at the tiny checkpoint's size
        return vit.VisionTransformer(**vcfg), vcfg["embed_dim"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blip_pretrain, "create_vit", tiny_vit)
        model = reference.ImageReward(med_config=str(directory / "med_config.json"), device="cpu")
    hidden = json.loads((directory / "med_config.json").read_text())["hidden_size"]
    model.mlp = reference.MLP(hidden)  # their head class; its input width is hard-coded to 768 otherwise
    state = torch.load(directory / "ImageReward.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    images = _images()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]
    prompts[0] = "a very long prompt " * 10  # beyond 35 tokens: truncation must agree
    with torch.no_grad():
        theirs = np.array([model.score(p, im) for p, im in zip(prompts, images, strict=True)])
    mine = ours(images, prompts)
    assert np.abs(mine - theirs).max() < TOL, (mine, theirs)
    assert np.ptp(theirs) > 100 * TOL


def test_imagereward_preprocessing_matches_reference(imagereward_reference):
    reference, _, _ = imagereward_reference
    transform = reference._transform(224)
    for image in _images():
        torch.testing.assert_close(clip_center_crop(image), transform(image), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------- PickScore


def test_pickscore_matches_readme_computation():
    """The README's `calc_probs` body, before the softmax: processor → features → normalise → scale."""
    from transformers import AutoModel, AutoProcessor

    ours = build_scorer(ScorerSpec(name="pickscore", pretrained="tiny", device="cpu"))
    processor = AutoProcessor.from_pretrained(ours.weights)
    model = AutoModel.from_pretrained(ours.weights).eval()
    images = _images()
    prompt = "a cat wearing a tiny hat " * 12  # > 77 tokens: truncation
    with torch.no_grad():
        image_inputs = processor(
            images=images, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        text_inputs = processor(
            text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        image_embs = model.get_image_features(**image_inputs)
        image_embs = getattr(image_embs, "pooler_output", image_embs)
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.get_text_features(**text_inputs)
        text_embs = getattr(text_embs, "pooler_output", text_embs)
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        theirs = (model.logit_scale.exp() * (text_embs @ image_embs.T)[0]).numpy()
    mine = ours(images, [prompt] * len(images))
    assert np.abs(mine - theirs).max() < TOL, (mine, theirs)
    assert np.ptp(theirs) > 100 * TOL


# ------------------------------------------------------------------------------------------------ LAION aesthetic


def test_aesthetic_matches_laion_inference():
    """`simple_inference.py`: CLIP ViT-L/14 + its preprocess, numpy L2 normalisation, the MLP, here loaded with
    open_clip's own loader (`local-dir:`) and open_clip's own OpenAI preprocessing rather than ours."""
    import open_clip
    from torch import nn

    ours = build_scorer(ScorerSpec(name="aesthetic", pretrained="tiny", device="cpu"))
    backbone_dir = Path(ours.backbone_weights).parent
    clip_model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(backbone_dir))
    clip_model.eval()
    state = torch.load(ours.weights, map_location="cpu", weights_only=True)

    class MLP(nn.Module):  # the script's MLP (a LightningModule there), inference part only
        def __init__(self, input_size):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(input_size, 1024),
                nn.Dropout(0.2),
                nn.Linear(1024, 128),
                nn.Dropout(0.2),
                nn.Linear(128, 64),
                nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x):
            return self.layers(x)

    mlp = MLP(state["layers.0.weight"].shape[1])
    mlp.load_state_dict(state)
    mlp.eval()

    def normalized(a, axis=-1, order=2):
        l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
        l2[l2 == 0] = 1
        return a / np.expand_dims(l2, axis)

    images = _images()
    theirs = []
    with torch.no_grad():
        for image in images:
            features = clip_model.encode_image(preprocess(image).unsqueeze(0))
            embedding = normalized(features.cpu().numpy())
            theirs.append(mlp(torch.from_numpy(embedding).float()).item())
    theirs = np.array(theirs)
    mine = ours(images, ["ignored"] * len(images))
    assert np.abs(mine - theirs).max() < TOL, (mine, theirs)
    assert np.ptp(theirs) > 100 * TOL


def test_clip_preprocessing_matches_open_clip():
    import open_clip

    transform = open_clip.image_transform(224, is_train=False)
    for image in _images():
        torch.testing.assert_close(clip_center_crop(image), transform(image), atol=1e-6, rtol=0)
