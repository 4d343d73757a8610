"""The generative ConvNet (descriptor) learned by maximum likelihood with Langevin dynamics.

Xie, Lu, Zhu, Wu, "A Theory of Generative ConvNet", ICML 2016. The model is ``p(x; θ) ∝ exp(f(x; θ)) N(x; 0, σ² I)``.
Learning alternates (Algorithm 1, "analysis by synthesis"):

1. revise the synthesized images by l Langevin steps from where they stopped last time (persistent chains,
   started once from the zero image);
2. ascend the log-likelihood, whose gradient is ``mean_i ∂f(x_i)/∂θ − mean_j ∂f(x̃_j)/∂θ``: minimise
   ``mean_j f(x̃_j) − mean_i f(x_i)`` with x̃ detached.
"""

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_ebm.errors import UsageError
from lightning_ebm.methods.base import EBMModule
from lightning_ebm.methods.matconvnet import output_positions, parameter_layers, scale_and_cap_gradients
from lightning_ebm.mixins import GradNormTracker, LangevinMixin, diagnostics
from lightning_ebm.nets.descriptors import DescriptorFactory, TextureDescriptor, build_descriptor
from lightning_ebm.samplers.banks import ChainBank


class GenerativeConvNet(LangevinMixin, EBMModule):
    """Maximum-likelihood learning of a descriptor with persistent Langevin chains (Xie et al., ICML 2016).

    Every training iteration revises all ``n_chains`` persistent chains by ``langevin_steps`` Langevin steps and
    takes one optimiser step on ``loss = mean f(x̃) − mean f(x)``; the observed batch and the chains are averaged
    separately, so ``n_chains`` is independent of the batch size.

    Logged: ``train/loss``; the step output carries ``f_data``, ``f_sample`` and ``grad_norm`` (the mean norm of
    ∂f/∂x along the chains) for :class:`callbacks.EnergyMonitor`. ``val/`` and ``test/`` log ``f_data``,
    ``f_sample`` and ``energy_gap`` per pixel, and ``reconstruction_error`` (see :meth:`evaluate`).

    Args:
        net: builds the descriptor from the sample shape (a class such as ``TextureDescriptor``, or a partial).
        n_chains: persistent chains per process (1 for a texture in the paper; 36 for objects in the MatConvNet code).
        chain_init: where chains start: ``"zeros"`` (the paper: the zero image, the data mean), ``"reference"``
            (a draw of N(0, σ² I)) or ``"uniform"`` (U[-1, 1], as short-run MCMC does).
        sample_steps: Langevin steps that :meth:`sample` adds to the persistent chains (``None``:
            ``langevin_steps``).
        fresh_steps: ``None``: :meth:`sample` gives at most ``n_chains`` samples, and refuses more. An int: more
            samples are new chains from ``chain_init`` run this many Langevin steps under the final model (see
            :meth:`draw` for why they may not look like the training chains).
        grad_scaling: ``"positions"`` divides each layer's gradient by its output's number of positions, as the
            MatConvNet code does; ``"none"`` leaves gradients alone (the TF/PyTorch ports).
        grad_cap: after scaling, rescale each weight or bias gradient whose largest absolute entry exceeds
            ``grad_cap`` so that the largest entry equals it (MatConvNet ``cap1``: 20/255 for textures, 8 for
            objects); ``None`` for no cap.
        bias_lr_multiplier: learning-rate multiplier of the biases (2 in the MatConvNet code).
        layer_lr_multipliers: learning-rate multiplier of each layer of the descriptor that has parameters, in the
            order of ``net.modules()`` (the MatConvNet object net: ``[1, 0.5, 0.2857]``, the last argument of
            ``add_cnn_block`` in ``convNet_object.m``); biases get ``bias_lr_multiplier`` on top. ``None``: all 1.
        **kwargs: ``langevin_*`` (:class:`~lightning_ebm.mixins.LangevinMixin`) and ``sample_shape``,
            ``optimizer``, ``lr_scheduler`` (:class:`~lightning_ebm.methods.base.EBMModule`).
    """

    def __init__(
        self,
        net: DescriptorFactory = TextureDescriptor,
        *,
        n_chains: int = 1,
        chain_init: Literal["zeros", "reference", "uniform"] = "zeros",
        sample_steps: int | None = None,
        fresh_steps: int | None = None,
        grad_scaling: Literal["none", "positions"] = "none",
        grad_cap: float | None = None,
        bias_lr_multiplier: float = 1.0,
        layer_lr_multipliers: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.net = build_descriptor(net, self.sample_shape)
        layers = parameter_layers(self.net)
        if layer_lr_multipliers is not None and len(layer_lr_multipliers) != len(layers):
            raise UsageError(
                f"layer_lr_multipliers={list(layer_lr_multipliers)} has {len(layer_lr_multipliers)} entries, but the "
                f"descriptor has {len(layers)} layers with parameters ({', '.join(type(m).__name__ for m in layers)}): "
                "give one multiplier per layer, or null"
            )
        self.chains = ChainBank(n_chains, self.sample_shape)
        self._positions: dict[torch.nn.Parameter, int] | None = None

    # ----------------------------------------------------------------------------------------------- model
    def score(self, x: Tensor) -> Tensor:
        """``f(x): (B, *sample_shape) -> (B,)``, the negative energy without the reference term."""
        return self.net(x)

    def score_nets(self) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
        """The descriptor, for ``visualize``."""
        return {"net": (self.net, self.sample_shape)}

    def reconstruct(self, x: Tensor) -> Tensor:
        """``σ² ∂f/∂x``: the mean of the Gaussian piece that x falls in (Xie et al. 2016, §4; the auto-encoder).

        With ReLU nets ``p`` is piecewise Gaussian; on x's piece ``p ∝ exp(<w, x> − ‖x‖²/2σ²)``, whose mean is
        ``σ² w = σ² ∂f/∂x``. Contrastive divergence makes observed images fixed points of this map.
        """
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.score(x).sum(), x)
        return self.hparams.langevin_sigma**2 * grad

    def initial_chains(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` chain starting points ``(n, *sample_shape)`` drawn as ``chain_init`` says."""
        shape = (n, *self.sample_shape)
        init = self.hparams.chain_init
        if init == "zeros":
            return torch.zeros(shape, device=self.device)
        if init == "reference":
            return self.hparams.langevin_sigma * torch.randn(shape, generator=generator, device=self.device)
        return torch.rand(shape, generator=generator, device=self.device) * 2 - 1

    def synthesize(self, batch: Tensor, callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
        """Revise the persistent chains by ``langevin_steps`` steps and store them: ``(n_chains, *sample_shape)``."""
        if not self.chains.initialized:
            self.chains.set(self.initial_chains(self.chains.n_chains, self.rng))
        x = self.langevin(self.chains.get(self.device), callback=callback)
        self.chains.set(x)
        return x

    def chain_starts(self) -> Tensor | None:
        """The distinct chains :meth:`sample` continues, ``(m, *sample_shape)``: the persistent chains, or
        ``None`` before the first training step."""
        return self.chains.get(self.device) if self.chains.initialized else None

    def draw(self, indices: Tensor, rng: torch.Generator) -> Tensor:
        """Sample number ``i`` for each ``i`` in ``indices (n,)``: ``(n, *sample_shape)`` in [-1, 1].

        Index ``i < m`` continues distinct chain ``i`` of :meth:`chain_starts` by ``sample_steps`` steps. A model has
        only those ``m`` samples: a larger index is refused, unless ``fresh_steps`` is set, which starts a new chain
        as training's chains start (``chain_init``) and runs it that many steps under the final model. Such chains
        need not look like the training chains: a model learned with persistent chains is tuned to their path. In
        ``texture.yaml`` (700 iterations of 30 steps), 21,000 steps from the zero image under the final model gave a
        bright grid of stripes, not bricks. Before the first training step every chain is new and runs
        ``sample_steps`` steps from ``chain_init``.

        Raises:
            UsageError: more samples than distinct chains without ``fresh_steps``, or new chains that would all be
                the same (the zero image moved by Langevin without noise).
        """
        hp = self.hparams
        starts = self.chain_starts()
        m = 0 if starts is None else starts.shape[0]
        indices = indices.to(self.device)
        known, fresh = indices[indices < m], int((indices >= m).sum())
        if fresh and starts is not None and hp.fresh_steps is None:
            raise UsageError(
                f"{type(self).__name__} has {m} distinct chain(s) in this process (n_chains={self.chains.n_chains}), "
                f"so {m} different sample(s), and {int(indices.max()) + 1} were asked for. Ask for at most "
                f"{m} (predict's --data.n_predict, a callback's n_samples), train with more n_chains, or start new "
                "chains from chain_init with fresh_steps=K (--model.init_args.fresh_steps=K: K Langevin steps under "
                "the final model; they need not look like the training chains)"
            )
        if fresh and not hp.langevin_noise and hp.chain_init == "zeros":
            raise UsageError(
                f"{type(self).__name__}: {fresh} new chains would all be one sample: they start at the zero image "
                "(chain_init='zeros') and Langevin without noise (langevin_noise=False) moves them alike. Ask for at "
                f"most {max(m, 1)}, or start new chains with chain_init='uniform' or 'reference'"
            )
        out = torch.empty((len(indices), *self.sample_shape), device=self.device)
        if len(known):
            out[indices < m] = self.langevin(starts[known], n_steps=hp.sample_steps, rng=rng)
        if fresh:
            steps = hp.fresh_steps if starts is not None else hp.sample_steps
            out[indices >= m] = self.langevin(self.initial_chains(fresh, rng), n_steps=steps, rng=rng)
        return out.clamp(-1, 1)

    def sample(self, n: int, *, rng: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, *sample_shape)`` in [-1, 1], each a different chain (see :meth:`draw`): the first
        ``n`` persistent chains run ``sample_steps`` more steps. The stored chains are not changed."""
        return self.draw(torch.arange(n), self.seeded_rng() if rng is None else rng)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Samples numbered by the predict loader's indices, so that the batches of ``predict`` (and its ranks)
        together give ``n_predict`` different chains."""
        return self.draw(self.sample_numbers(batch), self.seeded_rng(10_000 + batch_idx))

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """One iteration: revise the chains, then the ML step on ``mean f(x̃) − mean f(x)``."""
        batch = self.images(batch)
        tracker = GradNormTracker() if self.logs_this_step() else None
        synthesized = self.synthesize(batch, callback=tracker)
        f_data = self.score(batch)
        f_sample = self.score(synthesized)
        loss = f_sample.mean() - f_data.mean()
        self.check_finite(loss, "the loss")
        self.log_train({"train/loss": loss}, prog_bar=True)
        return {"loss": loss, **diagnostics(f_data, f_sample, tracker)}

    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        """Energies per pixel on held-out ``x (B, *sample_shape)`` and on samples, and the auto-encoder error.

        ``f_data`` and ``f_sample`` are the mean f of the held-out images and of the model's samples (its distinct
        chains, at most B) divided by the number of values in a sample (C·H·W), so that runs at different image
        sizes compare; ``energy_gap = f_data − f_sample``. What a healthy value looks like: every descriptor here
        ends in a linear layer, ``f = <w, h(x)> + b``, and at a maximum-likelihood fixed point the data and the model
        agree on ``E[h]`` (the gradient in ``w`` is zero), hence on ``E[f]``: the gap goes to 0 as learning
        converges and the chains mix. A gap that stays large and positive means the samples are less probable
        than the data (too few Langevin steps, or chains that lag the model); a negative one, samples more probable
        than the data (chains stuck in a mode). ``reconstruction_error`` is ``mean (σ²∂f/∂x − x)²``, which CD
        drives to 0 (:meth:`reconstruct`).
        """
        starts = self.chain_starts()
        n = x.shape[0] if starts is None else min(x.shape[0], starts.shape[0])
        samples = self.sample(n, rng=self.seeded_rng(7))
        values = x[0].numel()
        f_data, f_sample = self.score(x).mean() / values, self.score(samples).mean() / values
        recon = (self.reconstruct(x) - x).pow(2).mean()
        return {"f_data": f_data, "f_sample": f_sample, "energy_gap": f_data - f_sample, "reconstruction_error": recon}

    # ---------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The injected optimiser; with ``bias_lr_multiplier`` or ``layer_lr_multipliers``, one parameter group per
        layer and kind (weights, biases), each at its multiple of the rate (so a scheduler scales them together)."""
        bias, layer = self.hparams.bias_lr_multiplier, self.hparams.layer_lr_multipliers
        if bias == 1.0 and layer is None:
            return super().configure_optimizers()
        modules = [self] if layer is None else parameter_layers(self.net)  # None: two groups, weights and biases
        groups: list[tuple[list[nn.Parameter], float]] = []
        for i, module in enumerate(modules):
            scale = 1.0 if layer is None else float(layer[i])
            named = list(module.named_parameters(recurse=layer is None))
            groups.append(([p for name, p in named if not name.endswith("bias")], scale))
            groups.append(([p for name, p in named if name.endswith("bias")], scale * bias))
        groups = [(params, scale) for params, scale in groups if params]
        optimizer = self.optimizer([{"params": params} for params, _ in groups])
        for group, (_, scale) in zip(optimizer.param_groups, groups):
            group["lr"] *= scale
        return self.with_scheduler(optimizer)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Check gradients, then apply the MatConvNet per-layer scaling and cap if asked."""
        super().on_before_optimizer_step(optimizer)
        scaling, cap = self.hparams.grad_scaling, self.hparams.grad_cap
        if scaling == "none" and cap is None:
            return
        if self._positions is None:
            if scaling == "positions":
                self._positions = output_positions(self.net, self.sample_shape)
            else:
                self._positions = {p: 1 for p in self.parameters()}
        scale_and_cap_gradients(self._positions, cap)
