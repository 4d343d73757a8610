"""Contrastive divergence (CD-k) and persistent CD for the generative ConvNet.

CD (Hinton 2002) starts the Langevin chains at the observed mini-batch and runs k steps before the same
maximum-likelihood update as :class:`~lightning_ebm.methods.generative_convnet.GenerativeConvNet`. For the
generative ConvNet, Xie et al. (ICML 2016, §4) show that CD makes the observed images reconstruct themselves by
the auto-encoder ``x ↦ σ² ∂f/∂x`` (:meth:`reconstruct`); such a model is not a good sampler from noise. Persistent
CD (Tieleman 2008) keeps the chains across updates instead of restarting them at the data; here the bank is
filled once from the first observed batches, then never reset (docs/methods.md, ContrastiveDivergence).
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_ebm.methods.generative_convnet import GenerativeConvNet


def _cycle(x: Tensor, n: int) -> Tensor:
    """The first ``n`` rows of ``x`` repeated cyclically: ``(n, *x.shape[1:])``."""
    return x[torch.arange(n, device=x.device) % x.shape[0]]


class ContrastiveDivergence(GenerativeConvNet):
    """CD-k from the observed batch, or persistent CD with ``persistent=True``.

    CD-k: each iteration starts one chain at every observed image and runs ``langevin_steps`` (k) steps; the newest
    ``n_chains`` observed images are kept (and saved in checkpoints) as the starts of :meth:`sample`.
    Persistent: ``n_chains`` chains are filled once from the observed batch (cycled), then continued from where
    they stopped at every iteration; they are saved in checkpoints for every rank.

    :meth:`sample` continues the persistent chains, or (CD-k) runs ``sample_steps`` steps from the kept observed
    images, each used once; more samples than those are refused unless ``fresh_steps`` starts new chains from
    ``chain_init`` (a CD model is not expected to sample well from there; see
    :meth:`~lightning_ebm.methods.generative_convnet.GenerativeConvNet.draw`).

    Args:
        persistent: keep the chains across updates (PCD) instead of restarting them at the data.
        **kwargs: as :class:`~lightning_ebm.methods.generative_convnet.GenerativeConvNet`; ``n_chains`` is the
            number of persistent chains (PCD) or of observed images kept to start samples from (CD-k).
    """

    def __init__(self, *, persistent: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def synthesize(self, batch: Tensor, callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
        """k Langevin steps from the observed batch (CD) or from the persistent chains (PCD)."""
        if self.hparams.persistent:
            if not self.chains.initialized:
                self.chains.set(_cycle(batch.detach(), self.chains.n_chains))
            return super().synthesize(batch, callback)
        self.chains.remember(batch)
        return self.langevin(batch, callback=callback)

    def chain_starts(self) -> Tensor | None:
        """The persistent chains (PCD), or the distinct observed images kept (CD-k); ``None`` before training."""
        if not self.chains.initialized:
            return None
        return self.chains.get(self.device) if self.hparams.persistent else self.chains.distinct(self.device)
