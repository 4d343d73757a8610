"""The HMC sampler against Gaussians known in closed form, its Metropolis correction, adaptation and hygiene."""

import pytest
import torch
from scipy import stats
from torch import nn

from lightning_ebm.samplers import hmc

A = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
MU = torch.tensor([1.0, -1.0], dtype=torch.float64)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """f(x) = −½ (x−μ)ᵀ A (x−μ), so p ∝ N(0, σ² I) exp(f) is N(P⁻¹ A μ, P⁻¹) with P = I/σ² + A."""
    d = x - MU.to(x.dtype)
    return -0.5 * (d * (d @ A.to(x.dtype))).sum(1)


def check_gaussian(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    n = len(x)
    x = x.double()
    assert torch.all((x.mean(0) - mean).abs() < 4 * torch.sqrt(torch.diag(cov) / n))
    se_cov = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
    assert torch.all((torch.cov(x.T) - cov).abs() < 4 * se_cov)
    for i in range(x.shape[1]):
        assert stats.kstest(((x[:, i] - mean[i]) / cov[i, i].sqrt()).numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_large_fixed_steps_sample_the_gaussian_product_exactly(sigma):
    """Leapfrog steps far too coarse for an unadjusted sampler: the Metropolis correction makes the law exact."""
    precision = torch.eye(2, dtype=torch.float64) / sigma**2 + A
    cov = torch.linalg.inv(precision)
    seen = []
    x = hmc(
        quadratic,
        torch.zeros(6000, 2),
        n_steps=60,
        step_size=0.9 * sigma,
        leapfrog_steps=4,
        sigma=sigma,
        target_accept=None,
        generator=torch.Generator().manual_seed(0),
        callback=lambda s: seen.append(s["accept_prob"].mean().item()),
    )
    assert 0.3 < sum(seen[10:]) / len(seen[10:]) < 0.95  # the correction is at work
    check_gaussian(x, cov @ A @ MU, cov)


def test_zero_score_samples_the_reference_gaussian():
    x = hmc(
        lambda x: torch.zeros(x.shape[0]), torch.full((6000, 3), 5.0), n_steps=40, step_size=0.5, sigma=2.0,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    check_gaussian(x, torch.zeros(3, dtype=torch.float64), 4 * torch.eye(3, dtype=torch.float64))


def test_step_size_adapts_to_the_target_acceptance_rate():
    rates, sizes = [], []

    def record(state):
        rates.append(state["accept_prob"].mean().item())
        sizes.append(state["step_size"])

    x = hmc(
        lambda x: torch.zeros(x.shape[0]), torch.randn(400, 50), n_steps=300, step_size=3.0, leapfrog_steps=5,
        target_accept=0.65, adapt_steps=200, generator=torch.Generator().manual_seed(2), callback=record,
    )  # fmt: skip
    assert rates[0] < 0.2  # ε = 3 in 50 dimensions: almost everything rejected at first
    assert abs(sum(rates[200:]) / 100 - 0.65) < 0.1
    assert torch.equal(sizes[250], sizes[299]) and not torch.equal(sizes[0], sizes[199])  # frozen after warm-up
    assert abs(x.var().item() - 1) < 0.05


def test_non_finite_proposals_are_rejected():
    def exploding(x):
        return torch.where(x[:, 0] > 0.5, torch.full_like(x[:, 0], float("nan")), torch.zeros_like(x[:, 0]))

    x = hmc(exploding, torch.zeros(200, 1), n_steps=20, step_size=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(x).all() and (x <= 0.5).all()


def test_parameters_untouched_under_inference_mode_and_reproducible():
    net = nn.Linear(4, 1)
    x0 = torch.randn(8, 4)
    before = x0.clone()
    with torch.inference_mode():
        a = hmc(lambda x: net(x).squeeze(1), x0, n_steps=3, step_size=0.1, generator=torch.Generator().manual_seed(4))
    b = hmc(lambda x: net(x).squeeze(1), x0, n_steps=3, step_size=0.1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(x0, before) and not a.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="leapfrog_steps=0"):
        hmc(lambda x: x.sum(1), torch.zeros(2, 2), n_steps=1, step_size=0.1, leapfrog_steps=0)
    with pytest.raises(ValueError, match="target_accept must be in"):
        hmc(lambda x: x.sum(1), torch.zeros(2, 2), n_steps=1, step_size=0.1, target_accept=1.5)
    with pytest.raises(ValueError, match="one value per sample"):
        hmc(lambda x: x.sum(), torch.zeros(2, 2), n_steps=1, step_size=0.1)
