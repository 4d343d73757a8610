"""Cooperative learning of a descriptor and a generator by MCMC teaching (CoopNets).

Xie, Lu, Gao, Zhu, Wu, "Cooperative Learning of Energy-Based Model and Latent Variable Model via MCMC Teaching",
AAAI 2018 (and TPAMI 2020). The generator proposes, the descriptor's Langevin dynamics revises, the descriptor learns
from the revision, and the generator learns from how its proposals were revised (docs/methods.md, CoopNets).
"""

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_ebm.methods.base import EBMModule, check_optimizer
from lightning_ebm.mixins import GeneratorMixin, GradNormTracker, LangevinMixin, diagnostics
from lightning_ebm.nets.descriptors import DescriptorFactory, ObjectDescriptor, build_descriptor
from lightning_ebm.nets.generators import GeneratorFactory, SceneGenerator


class CoopNets(LangevinMixin, GeneratorMixin, EBMModule):
    """CoopNets: a generator initialises the descriptor's Langevin chains and learns from their revisions.

    One iteration (docs/methods.md, CoopNets): z ~ N(0, I); x̂ = g(z); x̃ = ``langevin_steps`` of the
    descriptor's Langevin dynamics from x̂; optionally z̃ = ``generator_steps`` of Langevin on p(z | x̃) (off by
    default, as in the released code, so z̃ = z); then the descriptor step on ``mean f(x̃) − mean f(x)`` and the
    generator step on ``mean_j ‖x̃_j − g(z̃_j)‖² / (2 s²)``, both with the same x̃. The two losses share no
    parameter and x̃ is fixed, so one backward pass of their sum gives each network exactly the gradient of its own
    loss, and stepping the descriptor "first" or both at once is the same update; it also keeps every parameter in
    the one backward pass that DDP synchronises, so plain ``ddp`` works. ``max_steps`` counts iterations.

    ``n_chains`` (the synthesized examples per iteration, 144 in the TF code) is independent of the observed batch
    (100 there). :meth:`sample` is the paper's test-time sampler: the generator, then ``sample_steps`` Langevin steps
    of the descriptor; sample grids show both.

    Args:
        descriptor: builds the descriptor from the sample shape.
        generator: builds the generator from the sample shape.
        n_chains: synthesized examples per iteration and process.
        sample_steps: descriptor Langevin steps of the test-time sampler (10 in the TF code; ``None``:
            ``langevin_steps``).
        generator_optimizer: builds the generator's optimiser (``optimizer`` is the descriptor's).
        generator_lr_scheduler: the generator's scheduler, stepped every iteration.
        descriptor_clip_val: clip the descriptor's gradient norm to this (``None``: no clipping).
        generator_clip_val: clip the generator's gradient norm to this (``None``: no clipping).
        **kwargs: ``langevin_*`` (descriptor), ``generator_*`` (latent inference and s), and ``sample_shape``,
            ``optimizer``, ``lr_scheduler`` (the descriptor's).
    """

    def __init__(
        self,
        descriptor: DescriptorFactory = ObjectDescriptor,
        generator: GeneratorFactory = SceneGenerator,
        *,
        n_chains: int = 144,
        sample_steps: int | None = 10,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        generator_lr_scheduler: LRSchedulerCallable | None = None,
        descriptor_clip_val: float | None = None,
        generator_clip_val: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if n_chains < 1:
            raise ValueError(f"CoopNets needs n_chains >= 1, got {n_chains}")
        self.automatic_optimization = False
        self.descriptor = build_descriptor(descriptor, self.sample_shape)
        self.generator = generator(self.sample_shape)
        self.generator_optimizer = check_optimizer("generator_optimizer", generator_optimizer)
        self.generator_lr_scheduler = generator_lr_scheduler

    # ----------------------------------------------------------------------------------------------- model
    def score(self, x: Tensor) -> Tensor:
        """The descriptor's ``f(x): (B, *sample_shape) -> (B,)``."""
        return self.descriptor(x)

    def score_nets(self) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
        """The descriptor, for ``visualize``."""
        return {"descriptor": (self.descriptor, self.sample_shape)}

    def generate(self, z: Tensor) -> Tensor:
        """The generator's ``g(z): (B, *latent_shape) -> (B, *sample_shape)``."""
        return self.generator(z)

    def latents(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` latent vectors ``z ~ N(0, I)``, ``(n, *latent_shape)``."""
        return torch.randn((n, *self.generator.latent_shape), generator=rng, device=self.device)

    def sample_stages(self, n: int, *, rng: torch.Generator | None = None) -> dict[str, Tensor]:
        """The generator's proposals x̂ and their Langevin revisions x̃ (the samples), both in [-1, 1]."""
        g = self.seeded_rng() if rng is None else rng
        with torch.no_grad():
            proposal = self.generate(self.latents(n, g))
        revised = self.langevin(proposal, n_steps=self.hparams.sample_steps, rng=g)
        return {"generator": proposal.clamp(-1, 1), "descriptor": revised.clamp(-1, 1)}

    def sample(self, n: int, *, rng: torch.Generator | None = None) -> Tensor:
        """The test-time sampler: ``n`` generator proposals revised by ``sample_steps`` Langevin steps."""
        return self.sample_stages(n, rng=rng)["descriptor"]

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """One iteration of MCMC teaching (see the class docstring)."""
        x = self.images(batch)
        z = self.latents(self.hparams.n_chains, self.rng)
        # One generator forward serves both the proposal and the generator's loss when z stays as drawn (the papers'
        # MCMC teaching); inferring z (generator_steps > 0) moves it, and the loss then needs g at the new z.
        infer = self.hparams.generator_steps > 0
        with torch.set_grad_enabled(not infer):
            generated = self.generate(z)
        proposal = generated.detach()
        tracker = GradNormTracker() if self.logs_this_step() else None
        revised = self.langevin(proposal, callback=tracker)
        if infer:
            z = self.infer_latent(revised, z)
            generated = self.generate(z)
        f_data, f_sample = self.score(x), self.score(revised)
        descriptor_loss = f_sample.mean() - f_data.mean()
        generator_loss = (revised - generated).pow(2).flatten(1).sum(1).mean() / (2 * self.hparams.generator_sigma**2)
        self.check_finite(descriptor_loss, "the descriptor loss")
        self.check_finite(generator_loss, "the generator loss")

        self.manual_update(
            descriptor_loss + generator_loss, (self.hparams.descriptor_clip_val, self.hparams.generator_clip_val)
        )

        if tracker is None:
            return {}
        revision = (revised - proposal).pow(2).mean().sqrt()
        self.log_dict(
            {"train/loss": descriptor_loss, "train/generator_loss": generator_loss, "train/revision": revision},
            prog_bar=True,
        )
        return diagnostics(f_data, f_sample, tracker)

    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        """f per pixel on held-out data and on fresh samples, their gap, and how far Langevin moves the proposals
        (rms, in the [-1, 1] pixel range).

        Energies are divided by the values in a sample (C·H·W). The descriptor ends in a linear layer, so at a
        maximum-likelihood fixed point the gap goes to 0 (see :meth:`GenerativeConvNet.evaluate
        <lightning_ebm.methods.GenerativeConvNet.evaluate>`); a ``revision`` near 0 means the generator already
        proposes what the descriptor's Langevin revision would make of its proposals.
        """
        stages = self.sample_stages(x.shape[0], rng=self.seeded_rng(7))
        values = x[0].numel()
        f_data, f_sample = self.score(x).mean() / values, self.score(stages["descriptor"]).mean() / values
        revision = (stages["descriptor"] - stages["generator"]).pow(2).mean().sqrt()
        return {"f_data": f_data, "f_sample": f_sample, "energy_gap": f_data - f_sample, "revision": revision}

    # ---------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The descriptor's optimiser, then the generator's (and their schedulers, stepped every iteration)."""
        d_opt = self.optimizer(self.descriptor.parameters())
        g_opt = self.generator_optimizer(self.generator.parameters())
        schedulers = []
        if self.lr_scheduler is not None:
            schedulers.append({"scheduler": self.lr_scheduler(d_opt), "interval": "step"})
        if self.generator_lr_scheduler is not None:
            schedulers.append({"scheduler": self.generator_lr_scheduler(g_opt), "interval": "step"})
        return [d_opt, g_opt], schedulers
