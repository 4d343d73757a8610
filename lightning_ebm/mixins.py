"""Thin sampler mixins that LightningModules inherit (placed left of the Lightning base).

A mixin takes keyword-only, prefixed hyper-parameters, forwards the rest with ``**kwargs``, records its own values
with ``save_hyperparameters`` and exposes one method that calls a pure sampler with the host's network and
noise generator. It keeps no other state.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ebm.samplers.hmc import hmc
from lightning_ebm.samplers.langevin import langevin, posterior_langevin
from lightning_ebm.samplers.speed import Precision


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``module``'s parameters inside the block, restoring each flag after.

    Sampling differentiates with respect to the input only; frozen parameters keep autograd from saving what a
    weight gradient would need.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GradNormTracker:
    """A Langevin ``callback`` that averages ``‖∂f/∂x‖`` per sample over the steps (on the device, no sync): the
    gradient-norm diagnostic of Nijkamp et al. (AAAI 2020) that methods report to ``callbacks.EnergyMonitor``."""

    def __init__(self) -> None:
        self.norms: list[Tensor] = []

    def __call__(self, state: dict[str, Any]) -> None:
        self.norms.append(state["grad"].flatten(1).norm(dim=1).mean())

    def mean(self, device: torch.device) -> Tensor:
        """The mean norm over the steps seen (0 if none)."""
        return torch.stack(self.norms).mean() if self.norms else torch.zeros((), device=device)


def diagnostics(f_data: Tensor, f_sample: Tensor, tracker: GradNormTracker | None) -> dict[str, Tensor]:
    """The step output that ``callbacks.EnergyMonitor`` logs: the mean score of the observed batch and of the
    synthesized one (``f_data``, ``f_sample``: the ``(B,)`` scores, averaged) and ``grad_norm`` from ``tracker``;
    nothing on a step without a tracker (one that logs nothing, see ``EBMModule.logs_this_step``)."""
    if tracker is None:
        return {}
    return {
        "f_data": f_data.mean().detach(),
        "f_sample": f_sample.mean().detach(),
        "grad_norm": tracker.mean(f_data.device),
    }


class AcceptanceTracker:
    """An HMC ``callback`` that keeps the last iteration's mean acceptance probability and step size: what
    :class:`HMCMixin` reports (to the logger in a training loop, on the console in ``visualize``)."""

    def __init__(self) -> None:
        self.accept_prob = float("nan")
        self.step_size = float("nan")

    def __call__(self, state: dict[str, Any]) -> None:
        self.accept_prob = state["accept_prob"].mean().item()
        self.step_size = state["step_size"].mean().item()


class LangevinMixin:
    """Langevin sampling of the host's descriptor, ``p(x) ∝ exp(f(x)) N(x; 0, σ² I)`` (Xie et al., ICML 2016).

    The host provides ``score(x): (B, *S) -> (B,)`` (its ``f``), ``rng`` (the rank's noise) and
    ``check_finite`` (from :class:`~lightning_ebm.methods.base.EBMModule`).

    Args:
        langevin_steps: Langevin steps per training iteration (l in the paper).
        langevin_step_size: δ. Couples with the pixel range and σ: 0.3 with σ = 1 on 0..255 images is
            0.0023 with σ = 0.0078 on [-1, 1] images (docs/methods.md, "Pixel range, δ and σ").
        langevin_sigma: σ, the standard deviation of the Gaussian reference distribution.
        langevin_noise: add the noise term (off in the released multi-grid and CoopVAEBM codes).
        langevin_clip: clamp the chains to ``[low, high]`` after every step; ``None`` for no clipping.
        langevin_compile: compile the score network with ``torch.compile`` (pays for smooth nets; see ``make bench``).
        langevin_precision: ``"bf16"``/``"fp16"``: the score's forward and backward under autocast, chains float32.
        langevin_channels_last: chains and the module's weights in the channels-last layout (GPUs).
        langevin_cuda_graphs: compile the score network with CUDA graphs (``mode="reduce-overhead"``; implies
            ``langevin_compile``); on a CPU it warns and compiles without them.
    """

    def __init__(
        self,
        *,
        langevin_steps: int = 30,
        langevin_step_size: float = 0.0046,
        langevin_sigma: float = 0.0154,
        langevin_noise: bool = True,
        langevin_clip: tuple[float, float] | None = None,
        langevin_compile: bool = False,
        langevin_precision: Precision | None = None,
        langevin_channels_last: bool = False,
        langevin_cuda_graphs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if langevin_step_size <= 0:
            raise ValueError(
                f"langevin_step_size={langevin_step_size}: Langevin needs a step size δ > 0 (δ = 0 leaves the chains "
                "where they start); give --model.langevin_step_size such as 0.0046"
            )
        if langevin_steps < 0 or langevin_sigma <= 0:
            raise ValueError(
                f"Langevin needs langevin_steps >= 0, langevin_step_size > 0 and langevin_sigma > 0; got "
                f"{langevin_steps}, {langevin_step_size}, {langevin_sigma}"
            )
        self.save_hyperparameters(
            "langevin_steps",
            "langevin_step_size",
            "langevin_sigma",
            "langevin_noise",
            "langevin_clip",
            "langevin_compile",
            "langevin_precision",
            "langevin_channels_last",
            "langevin_cuda_graphs",
        )

    def langevin(
        self,
        x0: Tensor,
        *,
        f: Callable[[Tensor], Tensor] | None = None,
        n_steps: int | None = None,
        rng: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Revise ``x0`` ``(B, *S)`` by Langevin dynamics of ``f`` (default: the host's ``score``).

        Parameters are frozen while sampling; the result is checked for NaN and infinity.
        """
        hp = self.hparams
        score = self.score if f is None else f
        if hp.langevin_channels_last:
            self.to(memory_format=torch.channels_last)  # a no-op once converted
        with frozen(self):
            x = langevin(
                score,
                x0,
                n_steps=hp.langevin_steps if n_steps is None else n_steps,
                step_size=hp.langevin_step_size,
                sigma=hp.langevin_sigma,
                noise=hp.langevin_noise,
                clip=None if hp.langevin_clip is None else tuple(hp.langevin_clip),
                generator=self.rng if rng is None else rng,
                callback=callback,
                compile=hp.langevin_compile,
                precision=hp.langevin_precision,
                channels_last=hp.langevin_channels_last,
                cuda_graphs=hp.langevin_cuda_graphs,
            )
        self.check_finite(x, "the Langevin chains")
        return x


class GeneratorMixin:
    """Langevin inference of the host's generator latents on the posterior ``p(z | x)`` of ``x = g(z) + N(0, s² I)``.

    The inferential back-propagation of alternating back-propagation (Han et al., AAAI 2017) and the optional
    generator step of CoopNets (Xie et al., AAAI 2018). The host provides ``generate(z)`` (its ``g``), ``rng`` and
    ``check_finite``.

    Args:
        generator_steps: Langevin steps on z per iteration (0: no inference, the CoopNets default).
        generator_step_size: δ of the latent Langevin (0.1 in the CoopNets code, 0.3 in ABP's).
        generator_sigma: s, the standard deviation of the generator's observation noise (0.3 in every code); the
            generator learns by regressing onto its targets with weight 1/(2s²).
        generator_noise: add the noise term; ``False`` is gradient descent on ``−log p(x, z)``.
        generator_compile: compile the generator's forward for the latent steps (``torch.compile``).
        generator_cuda_graphs: compile it with CUDA graphs (implies ``generator_compile``; GPUs).
    """

    def __init__(
        self,
        *,
        generator_steps: int = 0,
        generator_step_size: float = 0.1,
        generator_sigma: float = 0.3,
        generator_noise: bool = True,
        generator_compile: bool = False,
        generator_cuda_graphs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if generator_step_size <= 0:
            raise ValueError(
                f"generator_step_size={generator_step_size}: latent Langevin needs a step size δ > 0 (δ = 0 leaves "
                "the latent chains where they start); give --model.generator_step_size such as 0.1"
            )
        if generator_steps < 0 or generator_sigma <= 0:
            raise ValueError(
                f"latent Langevin needs generator_steps >= 0, generator_step_size > 0 and generator_sigma > 0; got "
                f"{generator_steps}, {generator_step_size}, {generator_sigma}"
            )
        self.save_hyperparameters(
            "generator_steps",
            "generator_step_size",
            "generator_sigma",
            "generator_noise",
            "generator_compile",
            "generator_cuda_graphs",
        )

    def infer_latent(
        self,
        x: Tensor,
        z: Tensor,
        *,
        mask: Tensor | None = None,
        n_steps: int | None = None,
        noise: bool | None = None,
        rng: torch.Generator | None = None,
        g: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Revise latents ``z (B, *Z)`` towards the posterior given ``x (B, *S)`` (and a mask of observed pixels);
        ``n_steps`` and ``noise`` default to ``generator_steps`` and ``generator_noise``; ``g`` (default
        ``generate``) maps latents to what ``x`` observes, e.g. ``A g(z)`` for indirect observations."""
        hp = self.hparams
        with frozen(self):
            z = posterior_langevin(
                self.generate if g is None else g,
                x,
                z,
                n_steps=hp.generator_steps if n_steps is None else n_steps,
                step_size=hp.generator_step_size,
                sigma=hp.generator_sigma,
                noise=hp.generator_noise if noise is None else noise,
                mask=mask,
                generator=self.rng if rng is None else rng,
                compile=hp.generator_compile,
                cuda_graphs=hp.generator_cuda_graphs,
            )
        self.check_finite(z, "the inferred latent vectors")
        return z


class HMCMixin:
    """Hamiltonian Monte Carlo on ``p(x) ∝ exp(f(x)) N(x; 0, σ² I)`` for the host's score functions (Dai, Lu and Wu,
    ICLR 2015): the sampler of generative visualisation and of class-conditional sampling from a classifier.

    The host provides ``score(x)`` (the default ``f``), ``rng`` and ``check_finite``. The paper's settings are not
    published (docs/methods.md, GenerativeGradient); the defaults are common HMC practice for images in [-1, 1].

    Args:
        hmc_steps: HMC iterations per sample.
        hmc_step_size: the initial leapfrog step size ε.
        hmc_leapfrog_steps: leapfrog steps per iteration.
        hmc_sigma: σ of the Gaussian reference distribution.
        hmc_target_accept: the acceptance rate the first half of the iterations adapts ε to; ``None`` keeps ε.
        hmc_compile: compile the score network (``torch.compile``).
        hmc_cuda_graphs: compile it with CUDA graphs (implies ``hmc_compile``; GPUs).
    """

    def __init__(
        self,
        *,
        hmc_steps: int = 100,
        hmc_step_size: float = 0.01,
        hmc_leapfrog_steps: int = 10,
        hmc_sigma: float = 1.0,
        hmc_target_accept: float | None = 0.65,
        hmc_compile: bool = False,
        hmc_cuda_graphs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hmc_steps < 0 or hmc_step_size <= 0 or hmc_leapfrog_steps < 1 or hmc_sigma <= 0:
            raise ValueError(
                f"HMC needs hmc_steps >= 0, hmc_step_size > 0, hmc_leapfrog_steps >= 1 and hmc_sigma > 0; got "
                f"{hmc_steps}, {hmc_step_size}, {hmc_leapfrog_steps}, {hmc_sigma}"
            )
        self.save_hyperparameters(
            "hmc_steps",
            "hmc_step_size",
            "hmc_leapfrog_steps",
            "hmc_sigma",
            "hmc_target_accept",
            "hmc_compile",
            "hmc_cuda_graphs",
        )

    def hmc(
        self,
        x0: Tensor,
        *,
        f: Callable[[Tensor], Tensor] | None = None,
        n_steps: int | None = None,
        rng: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Revise ``x0`` ``(B, *S)`` by HMC on ``f`` (default: the host's ``score``), parameters frozen; the result
        is checked for NaN and infinity."""
        hp = self.hparams
        with frozen(self):
            x = hmc(
                self.score if f is None else f,
                x0,
                n_steps=hp.hmc_steps if n_steps is None else n_steps,
                step_size=hp.hmc_step_size,
                leapfrog_steps=hp.hmc_leapfrog_steps,
                sigma=hp.hmc_sigma,
                target_accept=hp.hmc_target_accept,
                generator=self.rng if rng is None else rng,
                callback=callback,
                compile=hp.hmc_compile,
                cuda_graphs=hp.hmc_cuda_graphs,
            )
        self.check_finite(x, "the HMC chains")
        return x
