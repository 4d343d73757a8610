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

from lightning_ebm.samplers.speed import Precision, fast_score, graphs_on

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
    compile: bool = False,
    precision: Precision | None = None,
    channels_last: bool = False,
    cuda_graphs: bool = False,
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
        compile: run ``f`` through ``torch.compile`` (compiled once, reused; :mod:`~lightning_ebm.samplers.speed`).
            6-8% off a descriptor step on CPUs with the nets' own rectifiers (``lightning_ebm.nets.activations``):
            measure with ``make bench``. Freeze the net's parameters while sampling, as the mixins do: a compiled
            backward is one autograd node that also computes the weight gradients if they require grad (1.3× the
            eager step here).
        precision: ``"bf16"`` or ``"fp16"`` runs f's forward and backward under autocast; the chain, the gradient
            and the update stay float32 (the δ²/σ² terms overflow in half precision).
        channels_last: keep 4-D chains in the channels-last layout (the net should be converted too:
            ``net.to(memory_format=torch.channels_last)``); pays on GPUs with tensor cores.
        cuda_graphs: compile ``f`` with CUDA graphs (``torch.compile`` ``mode="reduce-overhead"``; implies
            ``compile``): pays where a step is short enough for kernel launches to count. On a CPU it warns and
            compiles without them. The callback then gets copies of ``grad`` and ``f``.

    The update is in place on one chain tensor, and the noise is drawn into one buffer made once.

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
    graphs = graphs_on(x, cuda_graphs)
    f = fast_score(f, compile=compile or cuda_graphs, precision=precision, cuda_graphs=graphs)
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone(memory_format=layout)  # a normal tensor even when x was made under inference mode
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
            if callback is not None:  # a CUDA graph's replay overwrites its outputs: the callback gets copies
                fx = fx.detach().clone() if graphs else fx.detach()
                callback({"step": step, "x": x, "grad": grad.clone() if graphs else grad, "f": fx})
    return x


def posterior_langevin(
    g: Callable[[Tensor], Tensor],
    x: Tensor,
    z: Tensor,
    *,
    n_steps: int,
    step_size: float,
    sigma: float,
    noise: bool = True,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> Tensor:
    """Langevin dynamics on the generator's posterior ``p(z | x)`` for ``x = g(z) + N(0, s² I)``, ``z ~ N(0, I)``.

    Implements the inferential back-propagation of Han et al. (AAAI 2017, eq. 5) and the optional generator step of
    CoopNets (Xie et al., AAAI 2018)::

        z ← z + (δ²/2) · ((1/s²) · (m ⊙ (x − g(z)))ᵀ ∂g/∂z − z) + δ ε,   ε ~ N(0, I)

    ``m`` is the optional mask of observed pixels (learning from incomplete data); without noise it is gradient
    ascent on ``log p(x, z)``. Gradients are taken with respect to ``z`` only. Each sample's posterior is independent
    only when ``g`` treats samples independently: batch normalisation with batch statistics couples them.

    Args:
        g: the generator, ``(B, *Z) -> (B, *S)``.
        x: the observations ``(B, *S)``.
        z: the starting latents ``(B, *Z)``; never modified.
        n_steps: number of Langevin steps.
        step_size: δ.
        sigma: s, the standard deviation of the observation noise.
        noise: add the ``δ ε`` term (``False``: gradient ascent, the ``alter_grad`` option of the ABP code).
        mask: ``(B, *S)`` or broadcastable, 1 where a pixel is observed and 0 where it is missing.
        generator: the random-number generator for the noise.
        callback: called after every step with ``{"step", "z", "grad"}``.
        compile: run ``g`` through ``torch.compile`` (once, reused).
        cuda_graphs: compile ``g`` with CUDA graphs (as in :func:`langevin`; implies ``compile``).

    Returns:
        The final latents ``(B, *Z)``, detached.
    """
    if n_steps < 0 or step_size < 0 or sigma <= 0:
        raise ValueError(
            f"posterior_langevin needs n_steps >= 0, step_size >= 0 and sigma > 0; got n_steps={n_steps}, "
            f"step_size={step_size}, sigma={sigma}"
        )
    graphs = graphs_on(z, cuda_graphs)
    g = fast_score(g, compile=compile or cuda_graphs, cuda_graphs=graphs)
    half = step_size**2 / 2
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        mask = None if mask is None else mask.detach().clone()
        z = z.detach().clone()
        eps = torch.empty_like(z) if noise else None
        for step in range(n_steps):
            z.requires_grad_(True)
            residual = x - g(z)
            if mask is not None:
                residual = residual * mask
            (grad,) = torch.autograd.grad(residual.pow(2).sum() / (-2 * sigma**2), z)
            z = z.detach()
            z.mul_(1 - half).add_(grad, alpha=half)
            if eps is not None:
                z.add_(torch.randn(z.shape, generator=generator, out=eps), alpha=step_size)
            if callback is not None:
                callback({"step": step, "z": z, "grad": grad.clone() if graphs else grad})
    return z
