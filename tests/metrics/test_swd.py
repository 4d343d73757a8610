"""Sliced Wasserstein distance against known answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from datamodules import TextureDataModule
from lightning_ebm.metrics import laplacian_pyramid, sliced_wasserstein, swd


def test_a_set_against_itself_is_zero():
    a = torch.randn(500, 6)
    assert sliced_wasserstein(a, a, generator=torch.Generator().manual_seed(0)) == 0


def test_shift_gives_the_mean_projected_length():
    """b = a + v: each 1-D distance is |θ·v|, whose mean over the sphere is |v| Γ(d/2) / (√π Γ((d+1)/2))."""
    d = 8
    a = torch.randn(200, d)  # the shift is exact for any sample: only the directions are random
    v = torch.zeros(d)
    v[0] = 3.0
    got = sliced_wasserstein(a, a + v, n_directions=20_000, generator=torch.Generator().manual_seed(1))
    expected = 3.0 * math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))
    assert got == pytest.approx(expected, rel=0.02)


def test_unequal_sizes_compare_quantiles():
    """W1 between N(0, 1) and N(0, 4) in one dimension is (2 − 1)·E|Z| = √(2/π)."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(40_000, 1, generator=g), 2 * torch.randn(10_000, 1, generator=g)
    assert sliced_wasserstein(a, b, n_directions=1, generator=g) == pytest.approx(math.sqrt(2 / math.pi), rel=0.03)


def test_pyramid_adds_back_to_the_image():
    x = torch.rand(2, 3, 64, 48)
    levels = laplacian_pyramid(x, min_size=16)
    assert [tuple(level.shape[-2:]) for level in levels] == [(64, 48), (32, 24)]  # stops above 16 pixels
    image = levels[-1]
    for band in reversed(levels[:-1]):
        image = band + F.interpolate(image, size=band.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(image, x)


def test_a_texture_is_closer_to_itself_than_to_other_textures_and_noise():
    """Other patches of the same image score well under other textures and pixel noise of the same histogram."""
    brick, grass, gravel = (TextureDataModule(n, image_size=64).images[0][None] for n in ("brick", "grass", "gravel"))
    shuffled = brick.flatten()[torch.randperm(brick.numel(), generator=torch.Generator().manual_seed(0))]
    itself = swd(brick, brick, seed=1, patches_per_image=1024)
    for other in (grass, gravel, shuffled.reshape(brick.shape)):
        assert itself < swd(other, brick, seed=1, patches_per_image=1024) / 2.5


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        swd(torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32))


def test_the_floor_uses_fixed_training_crops_that_score_well_under_another_texture():
    """``reference_samples``: n different crops of the training rows, the same every call; against the held-out
    (centre) crop they score well under crops of another texture: the floor is the noise of the estimate."""
    brick = TextureDataModule("brick", image_size=96, crop_size=32, holdout=0.5, n_val=8)  # rows 0-47 train
    reference = brick.reference_samples(8)
    assert reference.shape == (8, 1, 32, 32) and torch.equal(reference, brick.reference_samples(8))
    assert len(torch.unique(reference.flatten(1), dim=0)) == 8
    brick = TextureDataModule("brick", image_size=128, crop_size=64)  # as texture.yaml: validates on the centre
    centre = brick.val_dataloader().dataset
    grass = TextureDataModule("grass", image_size=128, crop_size=64).reference_samples(8)
    floor = swd(brick.reference_samples(8), centre, patches_per_image=1024)
    assert floor < swd(grass, centre, patches_per_image=1024) / 2
    whole = TextureDataModule("brick", image_size=16)  # whole-image mode: the image itself, in turn
    assert torch.equal(whole.reference_samples(3), whole.images[0].expand(3, -1, -1, -1))
