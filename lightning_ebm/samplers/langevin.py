"""Langevin dynamics for the descriptor (generative ConvNet) model.

The model is ``p(x) ∝ exp(f(x)) · N(x; 0, σ² I)`` (Xie, Lu, Zhu, Wu, "A Theory of Generative ConvNet",
ICML 2016, eq. 1), whose energy is ``U(x) = ‖x‖² / (2σ²) − f(x)``. Langevin dynamics on U is the update
used by every descriptor code of that line (Xie et al. 2016, §3; the released TF and MatConvNet codes)::

    x_{τ+1} = x_τ − (δ²/2) · (x_τ / σ² − ∂f(x_τ)/∂x) + δ · ε_τ,    ε_τ ~ N(0, I)

With noise it samples p exactly in the small-step limit; without noise (``noise=False``, the multi-grid and
CoopVAEBM codes) it is gradient ascent on log p.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]


def langevin(
    f: ScoreFn,
    x: Tensor,
    *,
    n_steps: int,
    step_size: float,
    sigma: float,
    noise: bool = True,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Run ``n_steps`` of Langevin dynamics on ``p(x) ∝ exp(f(x)) N(x; 0, σ² I)``.

    Implements ``x ← x − (δ²/2)(x/σ² − ∂f/∂x) + δ ε`` (Xie et al., ICML 2016, §3). Gradients are taken with
    ``torch.autograd.grad`` with respect to ``x`` only, so no parameter's ``.grad`` is touched and no DDP
    reduction fires; the function works when called under ``torch.no_grad()`` or ``torch.inference_mode()``.

    Args:
        f: score function (negative energy without the reference term), ``(B, *S) -> (B,)``.
        x: starting points ``(B, *S)``; never modified.
        n_steps: number of Langevin steps.
        step_size: δ, the step size (the noise standard deviation of one step).
        sigma: σ, the standard deviation of the Gaussian reference distribution.
        noise: add the ``δ ε`` term; ``False`` gives gradient ascent on ``log p`` (the released multi-grid code).
        clip: clamp every iterate to ``[low, high]`` after each step (the multi-grid code clips to the
            pixel range); ``None`` for no clipping.
        generator: the random-number generator for the noise, one per DDP rank.
        callback: called after every step with ``{"step", "x", "grad", "f"}``: the step index, the new
            iterate, ``∂f/∂x`` and ``f`` at the previous iterate. It must not modify them.

    Returns:
        The final iterate ``(B, *S)``, detached, with ``x``'s dtype and device.
    """
    if n_steps < 0 or step_size < 0 or sigma <= 0:
        raise ValueError(
            f"langevin needs n_steps >= 0, step_size >= 0 and sigma > 0; got n_steps={n_steps}, "
            f"step_size={step_size}, sigma={sigma}"
        )
    half = step_size**2 / 2
    decay = 1.0 - half / sigma**2
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()  # a normal tensor even when x was made under inference mode
        eps = torch.empty_like(x) if noise else None
        for step in range(n_steps):
            x.requires_grad_(True)
            fx = f(x)
            if fx.shape != x.shape[:1]:
                raise ValueError(
                    f"the score function must return one value per sample, shape {tuple(x.shape[:1])}; "
                    f"got {tuple(fx.shape)}: sum a net's outputs per sample, not over the batch"
                )
            grad = torch.autograd.grad(fx.sum(), x, allow_unused=True)[0] if fx.requires_grad else None
            if grad is None:  # f does not depend on x: only the reference term moves the chain
                grad = torch.zeros_like(x)
            x = x.detach()
            x.mul_(decay).add_(grad, alpha=half)
            if eps is not None:
                x.add_(torch.randn(x.shape, generator=generator, out=eps), alpha=step_size)
            if clip is not None:
                x.clamp_(clip[0], clip[1])
            if callback is not None:
                callback({"step": step, "x": x, "grad": grad, "f": fx.detach()})
    return x
