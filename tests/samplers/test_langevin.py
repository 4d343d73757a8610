"""The Langevin sampler against distributions known in closed form, and its gradient hygiene."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from lightning_ebm.samplers import langevin


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_importable_from_package():
    from lightning_ebm.samplers.langevin import langevin as direct

    assert langevin is direct


def test_zero_score_samples_the_reference_gaussian():
    """f = 0: the chain is a discretised Ornstein-Uhlenbeck process whose stationary law tends to N(0, σ²)."""
    sigma, delta, n = 2.0, 0.2, 20_000
    x = langevin(
        lambda x: torch.zeros(x.shape[0]),
        torch.zeros(n, 1),
        n_steps=1500,
        step_size=delta,
        sigma=sigma,
        generator=_gen(),
    )
    x = x.double().squeeze(1)
    # exact stationary variance of the discrete chain: σ² / (1 − δ²/(4σ²)), within 0.25% of σ² here
    var_exact = sigma**2 / (1 - delta**2 / (4 * sigma**2))
    se_mean, se_var = sigma / math.sqrt(n), var_exact * math.sqrt(2 / n)
    assert abs(x.mean().item()) < 4 * se_mean
    assert abs(x.var().item() - var_exact) < 4 * se_var
    assert stats.kstest(x.numpy(), "norm", args=(0, math.sqrt(var_exact))).pvalue > 1e-3


def test_quadratic_score_samples_the_gaussian_product():
    """f(x) = −½ (x−μ)ᵀ A (x−μ): p ∝ N(0, σ² I) · exp(f) is N(P⁻¹ A μ, P⁻¹) with P = I/σ² + A.

    The drift is linear, so the discrete chain x' = M x + (δ²/2) A μ + δ ε, M = I − (δ²/2) P, has the exact
    stationary law N(P⁻¹ A μ, δ² (I − M²)⁻¹); that tends to N(P⁻¹ A μ, P⁻¹) as δ → 0.
    """
    sigma, delta, n = 1.0, 0.08, 20_000
    a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)

    def f(x):
        d = x - mu.float()
        return -0.5 * (d * (d @ a.float())).sum(1)

    precision = torch.eye(2, dtype=torch.float64) / sigma**2 + a
    mean = torch.linalg.solve(precision, a @ mu)
    m = torch.eye(2, dtype=torch.float64) - delta**2 / 2 * precision
    cov = delta**2 * torch.linalg.inv(torch.eye(2, dtype=torch.float64) - m @ m)
    torch.testing.assert_close(cov, torch.linalg.inv(precision), rtol=0.01, atol=0)  # the small-step limit
    x = langevin(f, torch.zeros(n, 2), n_steps=2500, step_size=delta, sigma=sigma, generator=_gen(1)).double()
    emp_mean, emp_cov = x.mean(0), torch.cov(x.T)
    assert torch.all((emp_mean - mean).abs() < 4 * torch.sqrt(torch.diag(cov) / n))
    se_cov = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
    assert torch.all((emp_cov - cov).abs() < 4 * se_cov)
    for i in range(2):
        z = ((x[:, i] - mean[i]) / cov[i, i].sqrt()).numpy()
        assert stats.kstest(z, "norm").pvalue > 1e-3


def test_one_step_matches_the_published_update():
    """x₁ = x₀ − (δ²/2)(x₀/σ² − ∂f/∂x) + δ ε with the generator's ε."""
    w = torch.randn(3, 4)
    f = lambda x: (x * w).sum((1, 2)) + (x**2).sum((1, 2))  # noqa: E731
    x0 = torch.randn(5, 3, 4)
    delta, sigma = 0.1, 0.5
    out = langevin(f, x0, n_steps=1, step_size=delta, sigma=sigma, generator=_gen(3))
    eps = torch.randn(x0.shape, generator=_gen(3))
    expected = x0 - delta**2 / 2 * (x0 / sigma**2 - (w + 2 * x0)) + delta * eps
    torch.testing.assert_close(out, expected)


def test_without_noise_is_gradient_ascent_and_deterministic():
    f = lambda x: -((x - 3) ** 2).sum(1)  # noqa: E731
    x0 = torch.zeros(4, 2)
    a = langevin(f, x0, n_steps=200, step_size=0.2, sigma=10.0, noise=False, generator=_gen(0))
    b = langevin(f, x0, n_steps=200, step_size=0.2, sigma=10.0, noise=False, generator=_gen(99))
    assert torch.equal(a, b)
    # the mode of exp(f) N(0, σ²): x = 3·2 / (2 + 1/σ²)
    torch.testing.assert_close(a, torch.full_like(a, 6 / (2 + 1 / 100)), atol=1e-3, rtol=0)


def test_clip_bounds_every_iterate():
    seen = []
    x = langevin(
        lambda x: 100 * x.sum(1),
        torch.zeros(8, 3),
        n_steps=20,
        step_size=0.5,
        sigma=1.0,
        clip=(-1.0, 1.0),
        generator=_gen(),
        callback=lambda s: seen.append(s["x"].clone()),
    )
    assert x.max() <= 1 and x.min() >= -1
    assert all(s.abs().max() <= 1 for s in seen)


def test_parameter_grads_untouched_and_input_unchanged():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3))
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = [p.grad.clone() for p in net.parameters()]
    x0 = torch.randn(3, 1, 8, 8)
    x0_copy = x0.clone()
    out = langevin(lambda x: net(x).flatten(1).sum(1), x0, n_steps=5, step_size=0.1, sigma=1.0, generator=_gen())
    assert all(torch.equal(p.grad, b) for p, b in zip(net.parameters(), before))
    assert torch.equal(x0, x0_copy)
    assert not out.requires_grad and out.grad_fn is None
    assert out.shape == x0.shape and out.dtype == x0.dtype and out.device == x0.device


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(context):
    """The validate/test/predict trap: Lightning calls the step under inference mode."""
    net = nn.Linear(4, 1)
    with context():
        x0 = torch.randn(6, 4)  # an inference tensor under inference_mode
        out = langevin(lambda x: net(x).squeeze(1), x0, n_steps=3, step_size=0.1, sigma=1.0, generator=_gen())
    assert out.shape == (6, 4) and torch.isfinite(out).all()


def test_generator_controls_the_noise():
    f = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    x0 = torch.zeros(4, 3)
    run = lambda seed: langevin(f, x0, n_steps=3, step_size=0.1, sigma=1.0, generator=_gen(seed))  # noqa: E731
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_float64_chains_stay_float64():
    x = langevin(lambda x: -(x**2).sum(1), torch.zeros(3, 2, dtype=torch.float64), n_steps=2, step_size=0.1, sigma=1.0)
    assert x.dtype == torch.float64


def test_callback_sees_every_step():
    calls = []
    langevin(
        lambda x: -(x**2).sum(1),
        torch.zeros(3, 2),
        n_steps=4,
        step_size=0.1,
        sigma=1.0,
        callback=calls.append,
    )
    assert [c["step"] for c in calls] == [0, 1, 2, 3]
    assert set(calls[0]) == {"step", "x", "grad", "f"} and calls[0]["f"].shape == (3,)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sigma"):
        langevin(lambda x: x.sum(1), torch.zeros(2, 2), n_steps=1, step_size=0.1, sigma=0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        langevin(lambda x: x.sum(), torch.zeros(2, 2), n_steps=1, step_size=0.1, sigma=1.0)


def test_posterior_langevin_samples_the_linear_gaussian_posterior():
    """x = A z + b + N(0, s² I), z ~ N(0, I): p(z | x) = N(P⁻¹ Aᵀ (x − b) / s², P⁻¹), P = I + AᵀA / s².

    With a linear g the drift is linear, so the discrete chain's stationary covariance is exact: δ² (I − M²)⁻¹ with
    M = I − (δ²/2) P; the mask drops the unobserved coordinate from the likelihood.
    """
    from lightning_ebm.samplers import posterior_langevin

    s, delta, n = 0.5, 0.15, 20_000
    a = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.3, -0.4]], dtype=torch.float64)
    b = torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64)
    x_obs = torch.tensor([1.0, -0.5, 0.7], dtype=torch.float64)
    for mask in (None, torch.tensor([1.0, 0.0, 1.0])):
        m = torch.ones(3, dtype=torch.float64) if mask is None else mask.double()
        am = a * m[:, None]
        precision = torch.eye(2, dtype=torch.float64) + am.T @ am / s**2
        mean = torch.linalg.solve(precision, am.T @ (m * (x_obs - b))) / s**2
        mm = torch.eye(2, dtype=torch.float64) - delta**2 / 2 * precision
        cov = delta**2 * torch.linalg.inv(torch.eye(2, dtype=torch.float64) - mm @ mm)
        g = lambda z: z @ a.float().T + b.float()  # noqa: E731
        x = x_obs.float().expand(n, 3)
        z = posterior_langevin(
            g, x, torch.zeros(n, 2), n_steps=1500, step_size=delta, sigma=s, mask=mask, generator=_gen(4)
        )
        z = z.double()
        assert torch.all((z.mean(0) - mean).abs() < 4 * torch.sqrt(torch.diag(cov) / n))
        se_cov = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
        assert torch.all((torch.cov(z.T) - cov).abs() < 4 * se_cov)


def test_posterior_langevin_leaves_parameters_alone_and_works_under_inference_mode():
    from lightning_ebm.samplers import posterior_langevin

    net = nn.Linear(3, 5)
    with torch.inference_mode():
        z = posterior_langevin(net, torch.randn(4, 5), torch.randn(4, 3), n_steps=3, step_size=0.1, sigma=0.3)
    assert z.shape == (4, 3) and all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="sigma"):
        posterior_langevin(net, torch.randn(4, 5), torch.randn(4, 3), n_steps=1, step_size=0.1, sigma=0)
