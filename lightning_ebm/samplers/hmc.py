"""Hamiltonian Monte Carlo for the tilted models ``p(x) ∝ exp(f(x)) · N(x; 0, σ² I)``.

Dai, Lu and Wu (ICLR 2015) visualise a node of a ConvNet by sampling ``p(x) ∝ exp(f_node(x)) q(x)`` with HMC; the
energy is the descriptor's, ``U(x) = ‖x‖² / (2σ²) − f(x)`` (Xie et al., ICML 2016, eq. 1). One HMC iteration
draws a momentum ``p ~ N(0, I)``, runs ``leapfrog_steps`` leapfrog steps of size ε on ``H(x, p) = U(x) + ‖p‖²/2``
and accepts the end point with probability ``min(1, exp(H_start − H_end))`` (Neal, "MCMC using Hamiltonian
dynamics", 2011, §5.2). The paper's leapfrog count, step size and σ are not published (docs/methods.md,
GenerativeGradient), so they are arguments, and the step size adapts to a target acceptance rate during a warm-up.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_ebm.samplers.langevin import ScoreFn
from lightning_ebm.samplers.speed import fast_score, graphs_on


def _energy_and_grad(f: ScoreFn, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``U(x) = ‖x‖²/(2σ²) − f(x)`` per sample ``(B,)`` and ``∂U/∂x`` ``(B, *S)``, both detached."""
    x = x.detach().requires_grad_(True)
    fx = f(x)
    if fx.shape != x.shape[:1]:
        raise ValueError(
            f"the score function must return one value per sample, shape {tuple(x.shape[:1])}; got {tuple(fx.shape)}: "
            "sum a net's outputs per sample, not over the batch"
        )
    grad_f = torch.autograd.grad(fx.sum(), x, allow_unused=True)[0] if fx.requires_grad else None
    x = x.detach()
    energy = x.flatten(1).pow(2).sum(1) / (2 * sigma**2) - fx.detach()
    grad = x / sigma**2 if grad_f is None else x / sigma**2 - grad_f
    return energy, grad


def hmc(
    f: ScoreFn,
    x: Tensor,
    *,
    n_steps: int,
    step_size: float,
    leapfrog_steps: int = 10,
    sigma: float = 1.0,
    target_accept: float | None = 0.65,
    adapt_steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> Tensor:
    """Run ``n_steps`` HMC iterations on ``p(x) ∝ exp(f(x)) N(x; 0, σ² I)``, every chain with its own step size.

    Each chain (sample of the batch) is an independent Markov chain with its own Metropolis decision and its own
    step size ε_b. During the first ``adapt_steps`` iterations ε_b adapts towards ``target_accept`` by stochastic
    approximation on ``log ε_b`` (``+= (a_b − target) / (t + 1)^0.6`` with a_b the chain's acceptance probability);
    afterwards it is fixed and the chains are exact HMC. Gradients are taken with ``torch.autograd.grad`` with
    respect to ``x`` only (no parameter's ``.grad`` is touched); it works under ``no_grad`` and ``inference_mode``.
    A proposal whose energy is not finite is rejected.

    Args:
        f: score function ``(B, *S) -> (B,)``.
        x: starting points ``(B, *S)``; never modified.
        n_steps: HMC iterations.
        step_size: the initial leapfrog step size ε.
        leapfrog_steps: leapfrog steps per iteration (L).
        sigma: σ of the Gaussian reference distribution.
        target_accept: the acceptance rate the warm-up aims at (0.65: Neal 2011, §4.4 and Beskos et al. 2013);
            ``None`` keeps ε fixed.
        adapt_steps: warm-up iterations that adapt ε (default ``n_steps // 2``).
        generator: the random-number generator for momenta and decisions.
        callback: called after every iteration with ``{"step", "x", "accept_prob", "accepted", "step_size"}``
            (``(B,)`` each but ``x``).
        compile: run ``f`` through ``torch.compile`` (once, reused; :mod:`~lightning_ebm.samplers.speed`).
        cuda_graphs: compile ``f`` with CUDA graphs (as in :func:`~lightning_ebm.samplers.langevin`; implies
            ``compile``). The energies and gradients the leapfrog keeps are computed from the graph's outputs, not
            the outputs themselves, so a replay overwrites nothing that is still needed.

    Returns:
        The final states ``(B, *S)``, detached, with ``x``'s dtype and device.
    """
    if n_steps < 0 or step_size <= 0 or leapfrog_steps < 1 or sigma <= 0:
        raise ValueError(
            f"hmc needs n_steps >= 0, step_size > 0, leapfrog_steps >= 1 and sigma > 0; got n_steps={n_steps}, "
            f"step_size={step_size}, leapfrog_steps={leapfrog_steps}, sigma={sigma}"
        )
    if target_accept is not None and not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1) or None, got {target_accept}")
    adapt = (n_steps // 2 if adapt_steps is None else adapt_steps) if target_accept is not None else 0
    view = (-1,) + (1,) * (x.dim() - 1)
    f = fast_score(f, compile=compile or cuda_graphs, cuda_graphs=graphs_on(x, cuda_graphs))
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        log_eps = torch.full(x.shape[:1], float(step_size), dtype=x.dtype, device=x.device).log()
        energy, grad = _energy_and_grad(f, x, sigma)
        for step in range(n_steps):
            eps = log_eps.exp().view(view)
            p = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            start_h = energy + p.flatten(1).pow(2).sum(1) / 2
            new_x, new_grad = x, grad
            p = p - eps / 2 * new_grad
            for leap in range(leapfrog_steps):
                new_x = new_x + eps * p
                new_energy, new_grad = _energy_and_grad(f, new_x, sigma)
                p = p - (eps if leap < leapfrog_steps - 1 else eps / 2) * new_grad
            end_h = new_energy + p.flatten(1).pow(2).sum(1) / 2
            log_ratio = torch.nan_to_num(start_h - end_h, nan=-torch.inf).clamp(max=0)
            accept_prob = log_ratio.exp()
            u = torch.rand(x.shape[:1], generator=generator, dtype=x.dtype, device=x.device)
            accepted = u < accept_prob
            keep = accepted.view(view)
            x = torch.where(keep, new_x, x)
            grad = torch.where(keep, new_grad, grad)
            energy = torch.where(accepted, new_energy, energy)
            if step < adapt:
                log_eps = log_eps + (accept_prob - target_accept) / (step + 1) ** 0.6
            if callback is not None:
                callback(
                    {"step": step, "x": x, "accept_prob": accept_prob, "accepted": accepted, "step_size": eps.flatten()}
                )
    return x
