"""The observation operators of learning from indirect data: fixed, linear, of the stated shapes."""

import pytest
import torch

from lightning_ebm.nets import BlockAverage, RandomProjection


def test_random_projection_is_one_fixed_matrix_of_unit_pixel_scale():
    a, b = RandomProjection((1, 16, 16), ratio=0.25, seed=3), RandomProjection((1, 16, 16), ratio=0.25, seed=3)
    assert a.observed_shape == (64,) and torch.equal(a.matrix, b.matrix)
    assert not torch.equal(a.matrix, RandomProjection((1, 16, 16), ratio=0.25, seed=4).matrix)
    assert a.matrix.var().item() == pytest.approx(1 / 256, rel=0.05)
    x = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(a(2 * x + x.flip(0)), 2 * a(x) + a(x.flip(0)))  # linear
    assert "matrix" not in a.state_dict()  # rebuilt from the seed, nothing to checkpoint


def test_block_average_is_the_mean_of_every_block():
    op = BlockAverage((3, 8, 12), factor=4)
    x = torch.arange(3 * 8 * 12, dtype=torch.float).reshape(1, 3, 8, 12)
    y = op(x)
    assert op.observed_shape == (3, 2, 3) and y.shape == (1, 3, 2, 3)
    assert y[0, 1, 1, 2] == x[0, 1, 4:8, 8:12].mean()


def test_bad_operator_settings_name_the_value():
    with pytest.raises(ValueError, match=r"ratio=1\.5"):
        RandomProjection((1, 8, 8), ratio=1.5)
    with pytest.raises(ValueError, match="8x12 and factor=5"):
        BlockAverage((1, 8, 12), factor=5)
