"""Persistent sampler state: explicit objects, never module buffers.

A bank lives on its host LightningModule, which saves every rank's copy in the checkpoint
(``EBMModule.on_save_checkpoint`` gathers them) and gives each rank its own copy back on load. Keeping the state
out of ``state_dict`` keeps it out of weight averaging (``WeightAveraging`` averages buffers) and out of
``load_state_dict(strict=True)`` shape checks.
"""

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor


class Bank:
    """Per-rank state saved for every rank: the protocol that ``EBMModule`` checkpoints."""

    def rank_state(self) -> Tensor | None:
        """This rank's state as one tensor (gathered across ranks at checkpoint time), or ``None`` if empty."""
        raise NotImplementedError

    def restore(self, gathered: Tensor, rank: int, world_size: int) -> None:
        """Restore this rank's state from the ``(W_saved, ...)`` stack of every saved rank's state."""
        raise NotImplementedError


class ChainBank(Bank):
    """Persistent Markov chains of one process: ``n_chains`` samples of shape ``shape``.

    Persistent chains are the samples of maximum-likelihood learning with continued chains (Xie et al., ICML
    2016, §3: chains are not restarted between parameter updates) and of persistent contrastive divergence
    (Tieleman 2008). ``n_chains`` counts chains per process, like the batch size per process under DDP.

    Args:
        n_chains: number of chains held by this process.
        shape: shape of one sample, e.g. ``(C, H, W)``.
    """

    def __init__(self, n_chains: int, shape: Sequence[int]) -> None:
        if n_chains < 1:
            raise ValueError(f"a ChainBank needs n_chains >= 1, got {n_chains}")
        self.n_chains = int(n_chains)
        self.shape = tuple(int(s) for s in shape)
        self.chains: Tensor | None = None

    @property
    def initialized(self) -> bool:
        """Whether the chains exist yet (they are created on the first training step)."""
        return self.chains is not None

    def get(self, device: torch.device | str | None = None) -> Tensor:
        """The chains ``(n_chains, *shape)``, moved to ``device`` if given."""
        if self.chains is None:
            raise RuntimeError("the ChainBank is empty: set() its chains before get()")
        if device is not None and self.chains.device != torch.device(device):
            self.chains = self.chains.to(device)
        return self.chains

    def set(self, x: Tensor) -> None:
        """Store new chain states ``(n_chains, *shape)`` (detached)."""
        expected = (self.n_chains, *self.shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"ChainBank holds chains of shape {expected}, got {tuple(x.shape)}")
        self.chains = x.detach()

    def rank_state(self) -> Tensor | None:
        """The chains of this rank, or ``None`` before the first step."""
        return self.chains

    def restore(self, gathered: Tensor, rank: int, world_size: int) -> None:
        """Take this rank's chains from the saved ``(W_saved, N_saved, *shape)`` stack.

        With the same world size and chain count each rank gets back exactly its own chains. Otherwise the saved
        chains are pooled and dealt out again in order (cycling if there are fewer than needed), with a warning.
        """
        if tuple(gathered.shape[2:]) != self.shape:
            raise ValueError(
                f"the checkpoint's chains have sample shape {tuple(gathered.shape[2:])} but this model samples "
                f"{self.shape}: use the data settings (image size, channels) the checkpoint was trained with"
            )
        if gathered.shape[0] == world_size and gathered.shape[1] == self.n_chains:
            self.chains = gathered[rank].clone()
            return
        pool = gathered.flatten(0, 1)
        warnings.warn(
            f"re-sharding {pool.shape[0]} saved chains ({gathered.shape[0]} ranks x {gathered.shape[1]}) over "
            f"{world_size} ranks x {self.n_chains} chains: the resumed chains are not each rank's own",
            stacklevel=2,
        )
        index = (torch.arange(self.n_chains) + rank * self.n_chains) % pool.shape[0]
        self.chains = pool[index].clone()
