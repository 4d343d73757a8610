"""Alternating back-propagation for the generator network.

Han, Lu, Zhu, Wu, "Alternating Back-Propagation for Generator Network", AAAI 2017 (docs/methods.md).
The generator ``x = g(z) + N(0, s² I)``, ``z ~ N(0, I)``, is learned without an encoder or a discriminator: each
training example keeps its own latent vector, revised by Langevin dynamics on the posterior p(z | x) (inferential
back-propagation), and the generator takes one step on the reconstruction of the examples from their latents
(learning back-propagation).
"""

from typing import Any, Literal

import torch
from torch import Tensor

from lightning_ebm.methods.base import EBMModule
from lightning_ebm.mixins import GeneratorMixin
from lightning_ebm.nets.generators import GeneratorFactory, SceneGenerator
from lightning_ebm.nets.observations import ObservationFactory
from lightning_ebm.samplers.banks import LatentBank


class AlternatingBackprop(GeneratorMixin, EBMModule):
    """Alternating back-propagation: persistent per-example latents, Langevin inference, one generator step.

    One iteration on a batch of examples ``x_i`` with dataset indices ``i`` (Han et al., AAAI 2017, Algorithm 1):

    1. inferential back-propagation: ``z_i`` ← ``generator_steps`` Langevin steps (``generator_noise=False``:
       gradient descent, the code's ``alter_grad``) on ``log p(x_i, z_i)``, started from the example's latent of the
       previous epoch (``LatentBank``; N(0, I) or zeros the first time);
    2. learning back-propagation: one optimiser step on ``mean_i Σ_pixels m ⊙ (x_i − g(z_i))² / (2 s²)``, with the
       inferred latents held fixed; then the latents are stored for the next epoch.

    ``m`` is the batch's ``"mask"`` when the data provides one (1 on observed pixels): learning from incomplete data
    masks the residual in both steps, as the released ``vl_gan.m`` does. Learning from indirect data (the paper's
    compressed observations): with an ``observation`` operator ``A`` the model is ``y = A g(z) + N(0, s² I)``, both
    steps see only ``y = A x`` (computed from the batch's images, which nothing else reads), and ``x − g(z)`` becomes
    ``y − A g(z)``. The inference steps run with the generator's
    parameters frozen, so they never touch a parameter gradient. Under DDP every process gathers the others' new
    latents each step, so each one holds the whole bank whatever examples the sampler deals it next epoch.

    :meth:`sample` draws ``z ~ N(0, I)`` and returns ``g(z)``. :meth:`evaluate` reconstructs held-out images from
    latents inferred by ``eval_steps`` steps of gradient descent from N(0, I) draws on what training would observe
    (``val/recon_error``: the mean squared error of ``g(z)`` against the whole image, per pixel;
    ``val/recovery_error``: on the hidden pixels when the batch has a mask; ``val/observed_error``: of ``A g(z)``
    against ``y`` with an observation operator, where ``recon_error`` is the recovery of images never seen).

    Args:
        generator: builds the generator from the sample shape.
        latent_init: the first latent of each example: ``"normal"`` (the object and texture codes) or ``"zeros"``
            (the sound code).
        eval_steps: inference steps for held-out images (``None``: ``generator_steps``).
        observation: builds the operator ``A`` of indirect observations from the sample shape
            (:class:`~lightning_ebm.nets.RandomProjection`, :class:`~lightning_ebm.nets.BlockAverage`); ``None``
            observes the images themselves.
        **kwargs: ``generator_*`` (:class:`~lightning_ebm.mixins.GeneratorMixin`: steps, δ, s, noise) and
            ``sample_shape``, ``optimizer``, ``lr_scheduler``.
    """

    def __init__(
        self,
        generator: GeneratorFactory = SceneGenerator,
        *,
        latent_init: Literal["normal", "zeros"] = "normal",
        eval_steps: int | None = None,
        observation: ObservationFactory | None = None,
        generator_steps: int = 30,
        generator_step_size: float = 0.3,
        generator_sigma: float = 0.3,
        generator_noise: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            generator_steps=generator_steps,
            generator_step_size=generator_step_size,
            generator_sigma=generator_sigma,
            generator_noise=generator_noise,
            **kwargs,
        )
        self.save_hyperparameters("latent_init", "eval_steps")
        self.generator = generator(self.sample_shape)
        self.observation = None if observation is None else observation(self.sample_shape)
        self.latents = LatentBank(self.generator.latent_shape, latent_init, seed=torch.initial_seed() % 2**31)
        self._reserved = False  # the bank holds every training example's latent: no bounds read back per step

    # ----------------------------------------------------------------------------------------------- model
    def generate(self, z: Tensor) -> Tensor:
        """The generator's ``g(z): (B, *latent_shape) -> (B, *sample_shape)``."""
        return self.generator(z)

    def sample(self, n: int, *, rng: torch.Generator | None = None) -> Tensor:
        """``g(z)`` for ``n`` draws of ``z ~ N(0, I)``: ``(n, *sample_shape)`` in [-1, 1]."""
        g = self.seeded_rng() if rng is None else rng
        with torch.no_grad():
            z = torch.randn((n, *self.generator.latent_shape), generator=g, device=self.device)
            return self.generate(z).clamp(-1, 1)

    def observe(self, x: Tensor) -> Tensor:
        """What the model sees of images ``x (B, *sample_shape)``: ``A x`` with an observation operator, else ``x``."""
        return x if self.observation is None else self.observation(x)

    def observed_generate(self, z: Tensor) -> Tensor:
        """``A g(z)``: the generator seen through the observation operator (``g(z)`` without one)."""
        return self.observe(self.generate(z))

    def masked_residual(self, y: Tensor, z: Tensor, mask: Tensor | None) -> Tensor:
        """``m ⊙ (y − A g(z))``: the residual on the observed pixels (or measurements), ``(B, *observed_shape)``."""
        residual = y - self.observed_generate(z)
        return residual if mask is None else residual * mask

    def reconstruction_loss(self, y: Tensor, z: Tensor, mask: Tensor | None) -> Tensor:
        """``mean_i Σ m ⊙ (y_i − A g(z_i))² / (2 s²)``: minus the log-likelihood of the batch, up to a constant."""
        return self._loss(self.masked_residual(y, z, mask))

    def _observed(self, batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """The batch's images, what the model observes of them, and their mask."""
        x = self.images(batch)
        mask = batch.get("mask") if isinstance(batch, dict) else None
        if mask is not None and self.observation is not None:
            raise ValueError(
                "AlternatingBackprop got an occlusion mask and an observation operator: learn from occluded or from "
                "indirect data, not both (set data.occlusion or model.observation to null)"
            )
        return x, self.observe(x), mask

    def _loss(self, residual: Tensor) -> Tensor:
        return residual.pow(2).flatten(1).sum(1).mean() / (2 * self.hparams.generator_sigma**2)

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Infer the batch's latents from where they were, then return the generator's loss on them."""
        if not isinstance(batch, dict) or "index" not in batch:
            raise ValueError(
                "AlternatingBackprop keeps one latent vector per training example, so batches must be dicts with the "
                "examples' dataset 'index' (as every datamodules image set gives)"
            )
        index = batch["index"]
        _, y, mask = self._observed(batch)
        z = self.infer_latent(y, self.latents.get(index, checked=self._reserved), mask=mask, g=self.observed_generate)
        residual = self.masked_residual(y, z, mask)
        loss = self._loss(residual)
        self.check_finite(loss, "the generator loss")
        self._store(index, z)
        if self.logs_this_step():
            observed = y.numel() if mask is None else mask.expand_as(y).sum()
            error = residual.detach().pow(2).sum() / observed
            self.log_dict({"train/loss": loss, "train/recon_error": error}, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        """Make room in the bank for every training example now (the batches' ``index`` is the position in the
        training set), so that no training step reads the indices back from the device to grow it."""
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        try:
            size = len(dataset)
        except TypeError:  # a set of unknown size: the bank grows as indices come, checking each batch
            return
        self.latents.reserve(size)
        self._reserved = True

    def on_train_end(self) -> None:
        """Back to checked indices outside training (see :meth:`on_train_start`)."""
        super().on_train_end()
        self._reserved = False

    def _store(self, index: Tensor, z: Tensor) -> None:
        """Keep every process's new latents (gathered under DDP) for the next epoch."""
        if self._world_size() > 1:
            index, z = self.all_gather(index).flatten(0, 1), self.all_gather(z).flatten(0, 1)
        self.latents.set(index, z, checked=self._reserved)

    def evaluate_batch(self, batch: Any) -> dict[str, Tensor]:
        """:meth:`evaluate` with the batch's mask when it has one."""
        x, _, mask = self._observed(batch)
        return self.evaluate(x, mask=mask)

    def evaluate(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Reconstruct held-out ``x`` from latents inferred on what training would observe of it (its observed pixels,
        or ``A x``); mean squared errors."""
        g = self.seeded_rng(7)
        # from N(0, I), as training starts: from z = 0 every image would give the generator's batch norm the same
        # input, zero variance, and a gradient blown up by 1/sqrt(eps)
        z0 = torch.randn((x.shape[0], *self.generator.latent_shape), generator=g, device=x.device)
        y = self.observe(x)
        z = self.infer_latent(
            y, z0, mask=mask, n_steps=self.hparams.eval_steps, noise=False, rng=g, g=self.observed_generate
        )
        with torch.no_grad():
            generated = self.generate(z)
            squared = (generated - x).pow(2)
            out = {"recon_error": squared.mean()}
            if self.observation is not None:
                out["observed_error"] = (self.observe(generated) - y).pow(2).mean()
        if mask is not None:
            hidden = (1 - mask).expand_as(x)
            out["recovery_error"] = (squared * hidden).sum() / hidden.sum().clamp_min(1)
        return out
