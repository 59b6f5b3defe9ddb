"""Imported images brought to the training size as the reference trainers do (resize to cover, crop, flip)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from pipeline.testing.pickapic import gradient_jpeg
from trainer.images import ImageRule, cover_size, fit_image


def gradient(width: int, height: int) -> Image.Image:
    return Image.open(io.BytesIO(gradient_jpeg(width, height, seed=3))).convert("RGB")


@pytest.mark.parametrize("size", [(40, 24), (24, 40), (32, 32), (56, 40), (17, 90)])
def test_centre_crop_matches_the_reference_transform(size):
    """Diffusion-DPO's train.py: Resize(res, bilinear) then CenterCrop(res), on the same PIL image."""
    image = gradient(*size)
    reference = transforms.Compose(
        [
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(32),
        ]
    )(image)
    ours = fit_image(image, ImageRule(32, 32), "img")
    assert ours.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))


def test_cover_size_for_a_rectangular_target():
    assert cover_size(100, 50, 32, 32) == (64, 32)  # the shorter side to 32
    assert cover_size(40, 40, 32, 48) == (48, 48)  # covers both sides
    assert cover_size(32, 48, 32, 48) == (32, 48)  # already the size: untouched


def test_random_crop_and_flip_are_seeded_per_image():
    image = gradient(56, 40)
    rule = ImageRule(32, 32, crop="random", hflip=True, seed=0)
    crops = {fit_image(image, rule, f"img-{i}").tobytes() for i in range(12)}
    assert len(crops) > 2, "different images get different windows"
    again = fit_image(image, rule, "img-0")
    assert again.tobytes() == fit_image(image, rule, "img-0").tobytes(), "the same image, the same draw"
    assert fit_image(image, ImageRule(32, 32, "random", True, seed=1), "img-0").size == (32, 32)


def test_hflip_mirrors_about_half_of_the_images_and_leaves_the_crop():
    image = gradient(40, 24)
    plain, flipped = ImageRule(32, 32), ImageRule(32, 32, hflip=True)
    mirrored = 0
    for i in range(40):
        a, b = fit_image(image, plain, f"i{i}"), fit_image(image, flipped, f"i{i}")
        if a.tobytes() != b.tobytes():
            assert b.tobytes() == a.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
            mirrored += 1
    assert 10 <= mirrored <= 30
