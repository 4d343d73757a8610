"""FID and KID against closed forms, with a feature extractor that needs no download."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from lightning_ebm.metrics import fid, kid


class Flatten(nn.Module):
    """The identity feature map: an image's pixels are its features."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x.flatten(1).double()


def gaussian_images(n, mean, cov, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    x = torch.as_tensor(mean) + z @ torch.linalg.cholesky(torch.as_tensor(cov)).T
    return x.reshape(n, 1, 2, 2)  # four "pixels" = four features


def frechet(mu1, s1, mu2, s2):
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def test_fid_of_two_gaussian_feature_sets_is_the_closed_form():
    cov_a = np.diag([1.0, 2.0, 0.5, 1.0])
    cov_b = np.array([[1.5, 0.3, 0, 0], [0.3, 1.0, 0, 0], [0, 0, 1.0, 0.2], [0, 0, 0.2, 0.8]])
    mean_a, mean_b = np.zeros(4), np.array([1.0, -0.5, 0.0, 2.0])
    a = gaussian_images(4000, mean_a, cov_a, 0)
    b = gaussian_images(4000, mean_b, cov_b, 1)
    got = fid(a, b, feature=Flatten(4))
    fa, fb = a.flatten(1).numpy(), b.flatten(1).numpy()
    empirical = frechet(fa.mean(0), np.cov(fa.T), fb.mean(0), np.cov(fb.T))
    assert got == pytest.approx(empirical, rel=1e-6)  # what torchmetrics computes, exactly
    assert got == pytest.approx(frechet(mean_a, cov_a, mean_b, cov_b), rel=0.05)  # and the population value


def test_kid_is_near_zero_for_one_distribution_and_works_on_few_samples():
    """KID is an unbiased MMD² estimate: about 0 (within its spread over subsets) for two draws of one law."""
    draw = lambda n, mean, seed: gaussian_images(n, np.full(4, mean), np.eye(4), seed)  # noqa: E731
    same = kid(draw(400, 0.0, 0), draw(400, 0.0, 1), feature=Flatten(4), subset_size=100)
    shifted = kid(draw(400, 0.0, 0), draw(400, 1.0, 1), feature=Flatten(4), subset_size=100)
    assert abs(same[0]) < 3 * same[1] and shifted[0] > 10 * same[1] + abs(same[0])
    small = kid(draw(12, 0.0, 2), draw(20, 0.0, 3), feature=Flatten(4))
    assert np.isfinite(small[0])  # the default subset_size of 1000 is lowered to 12


def test_extractor_without_num_features_is_probed_with_the_data_shape():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    a, b = torch.rand(16, 3, 8, 8) * 2 - 1, torch.rand(16, 3, 8, 8) * 2 - 1
    assert fid(a, b, feature=net) >= 0


def test_inception_without_torch_fidelity_says_what_to_do():
    pytest.importorskip("torch")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"torch-fidelity.*nn\.Module"):
            fid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    else:
        pytest.skip("torch-fidelity is installed here")
