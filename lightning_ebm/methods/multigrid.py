"""Multi-grid generative ConvNets learned by minimal contrastive divergence.

Gao, Lu, Zhou, Zhu, Wu, "Learning Generative ConvNets via Multi-grid Modeling and Sampling", CVPR 2018
(docs/methods.md, MultigridMCD). One descriptor per grid; every synthesized chain starts from the 1×1 version of a
training image (the mean colour), is enlarged by block replication to the next grid, revised there by Langevin
dynamics under that grid's descriptor, and passed on; each grid's descriptor learns from the observed images
average-pooled to its grid against its own synthesized images.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ebm.methods.base import EBMModule
from lightning_ebm.mixins import GradNormTracker, LangevinMixin, diagnostics
from lightning_ebm.nets.descriptors import DescriptorFactory, MultigridDescriptor, build_descriptor, with_options
from lightning_ebm.samplers.banks import ChainBank


def pool_to(x: Tensor, side: int) -> Tensor:
    """Average-pool ``x (B, C, H, W)`` to ``(B, C, side, side)`` over ``H/side × W/side`` blocks (the paper's Q_k)."""
    return F.avg_pool2d(x, (x.shape[-2] // side, x.shape[-1] // side))


def replicate_to(x: Tensor, side: int) -> Tensor:
    """Enlarge ``x (B, C, h, h)`` to ``(B, C, side, side)`` by repeating each pixel as a block (the inverse Q_k)."""
    factor = side // x.shape[-1]
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def grid_name(side: int) -> str:
    """``"4x4"``: how a grid is named in logged metrics and sample stages."""
    return f"{side}x{side}"


class MultigridMCD(LangevinMixin, EBMModule):
    """Multi-grid minimal contrastive divergence: descriptors at ``grids`` sides, sampled coarse to fine.

    One iteration (Gao et al., CVPR 2018, §3; the released ``Multigrid_learning/model.py``): for each observed image
    x, the chain starts at its 1×1 average; for each grid k in ``grids`` the chain is block-replicated to k×k and
    revised by ``langevin_steps`` Langevin steps of descriptor k; then every descriptor takes one step on
    ``mean f_k(x̃_k) − mean f_k(Q_k x)`` with its own optimiser, Q_k being average pooling to k×k. The grids' losses
    share no parameter, so their sum is back-propagated once. ``max_steps`` counts iterations.

    Where the released code and the paper differ, both are options; the defaults are the paper's:

    ==================  =============================================  ==========================================
    setting             paper (default)                                released code
    ==================  =============================================  ==========================================
    ``langevin_steps``  30 per grid (project page)                     90 (flag ``T``)
    ``langevin_noise``  on (the usual Langevin equation)               off: gradient ascent only
    ``langevin_clip``   none                                           the pixel range: ``[-1, 1]``
    ``langevin_sigma``  0.392: the code's unused ``ref_sig`` = 50 on    ``inf``: no reference term
                        0..255, on [-1, 1] (the paper's σ is not
                        stated in the text we have)
    ==================  =============================================  ==========================================

    δ = 0.3 on 0..255 pixels is 0.3 · 2/255 ≈ 0.00235 on [-1, 1]; with batch normalisation after the first layer
    the descriptors are the same functions of either range, so the dynamics match exactly. The released code's
    Adam learning rate is 0.3 (β1 = 0.5); the recipes say what they use.

    :meth:`sample` starts from the 1×1 versions of training images that this process has seen (the last
    ``n_starts``, kept in checkpoints), or of the images given as ``start``, and :meth:`sample_stages` returns every
    grid's result so that sample grids show the coarse-to-fine sequence.

    Args:
        descriptor: builds one grid's descriptor from that grid's sample shape ``(C, k, k)``.
        grids: the grid sides from coarse to fine, each dividing the next; the last is the image side (the 1×1
            start has no model).
        grid_options: keyword arguments for ``descriptor`` per grid side, over those of the config, e.g.
            ``{64: {"channels": [32, 64, 128, 256]}}`` (a narrower first layer for the 64×64 net only). A side that is
            not in ``grids``, or a keyword the descriptor does not take, is refused.
        sample_steps: Langevin steps per grid when sampling (``None``: ``langevin_steps``).
        n_starts: 1×1 training images kept (per process) to start samples from.
        clip_val: clip each descriptor's gradient norm to this (``None``: no clipping, as the released code).
        langevin_steps, langevin_step_size, langevin_sigma, langevin_noise, langevin_clip: the Langevin dynamics of
            every grid (see the table).
        **kwargs: ``sample_shape``, ``optimizer`` (built once per grid) and ``lr_scheduler`` (one per grid).
    """

    def __init__(
        self,
        descriptor: DescriptorFactory = MultigridDescriptor,
        *,
        grids: Sequence[int] = (4, 16, 64),
        grid_options: dict[int, dict[str, Any]] | None = None,
        sample_steps: int | None = None,
        n_starts: int = 1024,
        clip_val: float | None = None,
        langevin_steps: int = 30,
        langevin_step_size: float = 0.00235,
        langevin_sigma: float = 0.392,
        langevin_noise: bool = True,
        langevin_clip: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            langevin_steps=langevin_steps,
            langevin_step_size=langevin_step_size,
            langevin_sigma=langevin_sigma,
            langevin_noise=langevin_noise,
            langevin_clip=langevin_clip,
            **kwargs,
        )
        self.save_hyperparameters("grids", "sample_steps", "n_starts", "clip_val")
        self.grids = [int(k) for k in grids]
        c, h, w = self.sample_shape
        if h != w or not self.grids or self.grids[-1] != h:
            raise ValueError(
                f"MultigridMCD needs square images whose side is the last grid: grids {self.grids}, images {h}x{w}; "
                f"set the data's image_size to {self.grids[-1] if self.grids else 'the last grid'} or end grids at {h}"
            )
        for coarse, fine in zip([1, *self.grids], self.grids):
            if fine <= coarse or fine % coarse:
                raise ValueError(
                    f"each grid must be larger than the one before and divisible by it (1x1 first): got {self.grids}; "
                    "the paper uses [4, 16, 64]"
                )
        self.automatic_optimization = False
        options = {int(k): v for k, v in (grid_options or {}).items()}
        if set(options) - set(self.grids):
            raise ValueError(
                f"grid_options names grids {sorted(set(options) - set(self.grids))}, but the grids are {self.grids}: "
                "key the options by one of those sides"
            )
        self.descriptors = nn.ModuleList(
            [
                build_descriptor(with_options(descriptor, options.get(k, {}), f"grid_options[{k}]"), (c, k, k))
                for k in self.grids
            ]
        )
        self.starts = ChainBank(n_starts, (c, 1, 1))

    # ----------------------------------------------------------------------------------------------- model
    def score(self, x: Tensor) -> Tensor:
        """The finest grid's descriptor ``f(x): (B, *sample_shape) -> (B,)``."""
        return self.descriptors[-1](x)

    def score_nets(self) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
        """Every grid's descriptor with its input size, coarsest first, for ``visualize``."""
        c = self.sample_shape[0]
        return {f"descriptors.{i}": (d, (c, k, k)) for i, (d, k) in enumerate(zip(self.descriptors, self.grids))}

    def synthesize(
        self,
        start: Tensor,
        *,
        n_steps: int | None = None,
        rng: torch.Generator | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[Tensor]:
        """Chains from ``start (B, C, 1, 1)`` through every grid: ``[(B, C, k, k) for k in grids]``.

        ``callback`` sees the Langevin steps of the finest grid.
        """
        x, out = start.detach(), []
        for side, net in zip(self.grids, self.descriptors):
            last = side == self.grids[-1]
            x = self.langevin(
                replicate_to(x, side), f=net, n_steps=n_steps, rng=rng, callback=callback if last else None
            )
            out.append(x)
        return out

    def _sample_starts(self, n: int, start: Tensor | None, order: Tensor | None = None) -> Tensor:
        """``(n, C, 1, 1)`` chain starts: the means of ``start`` (cycled), else distinct kept training means in a
        order drawn once per training step (repeating only after all were used), else zeros before the first
        training step. ``order`` numbers the samples (the predict loader's indices) instead of ``0..n-1``."""
        order = torch.arange(n, device=self.device) if order is None else order.to(self.device)
        if start is not None:
            start = start.to(self.device)
            if start.dim() != 4 or start.shape[1] != self.sample_shape[0]:
                raise ValueError(
                    f"start must be images (n, {self.sample_shape[0]}, h, w) whose means start the chains, got "
                    f"shape {tuple(start.shape)}"
                )
            return start.mean((2, 3), keepdim=True)[order % start.shape[0]]
        if not self.starts.initialized:  # before any training step: the mean of [-1, 1]
            return torch.zeros((n, self.sample_shape[0], 1, 1), device=self.device)
        kept = self.starts.distinct(self.device)
        if not self.hparams.langevin_noise and int(order.max()) >= len(kept):
            raise ValueError(
                f"MultigridMCD without Langevin noise (langevin_noise=False) turns each start into one sample, and "
                f"this model keeps {len(kept)} distinct starts (the means of the training images it saw, at most "
                f"n_starts={self.starts.n_chains}), so {int(order.max()) + 1} samples would repeat some: ask for at "
                "most that many, turn the noise on, or pass images as start="
            )
        shuffled = torch.randperm(len(kept), generator=self.seeded_rng(5), device=self.device)  # one order per step
        return kept[shuffled[order % len(kept)]]

    def sample_stages(
        self, n: int, *, rng: torch.Generator | None = None, start: Tensor | None = None, order: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The 1×1 starts and every grid's samples, ``{"1x1": (n, C, 1, 1), "4x4": (n, C, 4, 4), ...}`` in [-1, 1].

        Args:
            n: number of chains.
            rng: noise generator (``None``: a fresh seeded one, so sampling never changes training's noise).
            start: images ``(m, C, h, w)`` whose means start the chains (cycled to ``n``); ``None`` draws
                distinct means of training images this process has seen (zeros before the first training step).
            order: the samples' numbers ``(n,)`` (``predict``'s indices), which pick the starts; ``0..n-1`` if
                ``None``.
        """
        g = self.seeded_rng() if rng is None else rng
        start = self._sample_starts(n, start, order)
        grids = self.synthesize(start, n_steps=self.hparams.sample_steps, rng=g)
        stages = {grid_name(1): start.clamp(-1, 1)}
        stages.update({grid_name(k): x.clamp(-1, 1) for k, x in zip(self.grids, grids)})
        return stages

    def sample(self, n: int, *, rng: torch.Generator | None = None, start: Tensor | None = None) -> Tensor:
        """``n`` samples at the finest grid ``(n, *sample_shape)``; see :meth:`sample_stages`."""
        return self.sample_stages(n, rng=rng, start=start)[grid_name(self.grids[-1])]

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Samples numbered by the predict loader's indices, which pick distinct starts across the batches."""
        order = self.sample_numbers(batch)
        stages = self.sample_stages(len(order), rng=self.seeded_rng(10_000 + batch_idx), order=order)
        return stages[grid_name(self.grids[-1])]

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """One iteration of multi-grid minimal contrastive divergence (see the class docstring)."""
        x = self.images(batch)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"MultigridMCD was built for images {self.sample_shape}, got a batch {tuple(x.shape)}")
        start = pool_to(x, 1)
        self.starts.remember(start)
        tracker = GradNormTracker() if self.logs_this_step() else None
        synthesized = self.synthesize(start, callback=tracker)
        logs, losses = {}, []
        for side, net, syn in zip(self.grids, self.descriptors, synthesized):
            observed = pool_to(x, side)
            f_data, f_sample = net(observed), net(syn)
            losses.append(f_sample.mean() - f_data.mean())
            self.check_finite(losses[-1], f"the {grid_name(side)} descriptor's loss")
            if tracker is not None:
                logs[f"train/loss_{grid_name(side)}"] = losses[-1].detach()
                logs[f"train/recon_{grid_name(side)}"] = (observed - syn).abs().mean()
        self.manual_update(sum(losses), [self.hparams.clip_val] * len(self.grids))
        if tracker is None:
            return {}
        logs["train/loss"] = sum(losses).detach()
        self.log_dict(logs)
        return diagnostics(f_data, f_sample, tracker)  # the finest grid's

    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        """Per grid: f per pixel on held-out images and on samples started from their 1×1 versions, and the gap
        (finest grid unsuffixed); ``recon``: mean |x − sample| at the finest grid.

        Energies are divided by the values in a grid's image (C·k·k) so that grids and image sizes compare. The
        descriptors end in a linear layer, so at a maximum-likelihood fixed point the gap goes to 0 (see
        :meth:`GenerativeConvNet.evaluate <lightning_ebm.methods.GenerativeConvNet.evaluate>`); minimal contrastive
        divergence starts the chains at the data's 1×1 means, so a small gap here says the short chains already
        reach the model's typical images.
        """
        grids = self.synthesize(pool_to(x, 1), n_steps=self.hparams.sample_steps, rng=self.seeded_rng(7))
        out = {}
        for side, net, syn in zip(self.grids, self.descriptors, grids):
            values = x.shape[1] * side * side
            f_data, f_sample = net(pool_to(x, side)).mean() / values, net(syn).mean() / values
            out[f"energy_gap_{grid_name(side)}"] = f_data - f_sample
        out.update({"f_data": f_data, "f_sample": f_sample, "energy_gap": f_data - f_sample})
        out["recon"] = (x - grids[-1]).abs().mean()
        return out

    # ---------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """One optimiser per grid, coarse to fine (and one scheduler each, stepped every iteration)."""
        optimizers = [self.optimizer(net.parameters()) for net in self.descriptors]
        if self.lr_scheduler is None:
            return optimizers
        return optimizers, [{"scheduler": self.lr_scheduler(opt), "interval": "step"} for opt in optimizers]
