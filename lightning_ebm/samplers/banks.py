"""Persistent sampler state: explicit objects, never module buffers.

A bank lives on its host LightningModule, which saves every rank's copy in the checkpoint
(``EBMModule.on_save_checkpoint`` gathers them) and gives each rank its own copy back on load. Keeping the state
out of ``state_dict`` keeps it out of weight averaging (``WeightAveraging`` averages buffers) and out of
``load_state_dict(strict=True)`` shape checks.
"""

from collections.abc import Sequence

import torch
from torch import Tensor


def processes(n: int) -> str:
    """``1 process``, ``2 processes``."""
    return f"{n} process" if n == 1 else f"{n} processes"


class Bank:
    """Per-rank state saved for every rank: the protocol that ``EBMModule`` checkpoints."""

    def rank_state(self) -> Tensor | None:
        """This rank's state as one tensor (gathered across ranks at checkpoint time), or ``None`` if empty."""
        raise NotImplementedError

    def restore(self, gathered: Tensor, rank: int, world_size: int) -> str | None:
        """Restore this rank's state from the ``(W_saved, ...)`` stack of every saved rank's state; ``None`` when every
        rank got exactly its own state back, else one sentence (the same on every rank) saying how the saved state was
        given out, which the host reports once."""
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

    def remember(self, x: Tensor) -> None:
        """Keep the newest rows: ``x (B, *shape)`` first, then the rows held before, cut to ``n_chains`` (cycling
        while fewer have been seen). Makes the bank a memory of recent observed images (chain starts)."""
        x = x.detach()
        kept = x if self.chains is None else torch.cat([x, self.chains.to(x.device)])
        self.set(kept[torch.arange(self.n_chains, device=x.device) % kept.shape[0]])

    def distinct(self, device: torch.device | str | None = None) -> Tensor:
        """The different rows held ``(m, *shape)``, ``m <= n_chains``, in their order in the bank (a bank filled by
        cycling holds repeats)."""
        chains = self.get(device)
        _, inverse = torch.unique(chains.flatten(1), dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(chains), device=chains.device, dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(chains), device=chains.device), "amin")
        return chains[first.sort().values]

    def rank_state(self) -> Tensor | None:
        """The chains of this rank, or ``None`` before the first step."""
        return self.chains

    def restore(self, gathered: Tensor, rank: int, world_size: int) -> str | None:
        """Take this rank's chains from the saved ``(W_saved, N_saved, *shape)`` stack.

        With the same world size and chain count each rank gets back exactly its own chains. Otherwise (a run resumed
        on another number of processes, or with another ``n_chains``) the saved chains are pooled in rank order,
        ``W_saved × N_saved`` of them, and dealt out again in that order: rank ``r`` takes chains ``r·n_chains …
        (r+1)·n_chains − 1`` of the pool, cycling through the pool when it holds fewer than ``world_size ×
        n_chains`` (some chains then start twice, on different ranks or rows, and part ways at their first noise).
        Every chain continues from a saved state; none starts afresh. Returns what was done, for the host to report.
        """
        if tuple(gathered.shape[2:]) != self.shape:
            raise ValueError(
                f"the checkpoint's chains have sample shape {tuple(gathered.shape[2:])} but this model samples "
                f"{self.shape}: use the data settings (image size, channels) the checkpoint was trained with"
            )
        saved_world, saved_chains = gathered.shape[:2]
        if saved_world == world_size and saved_chains == self.n_chains:
            self.chains = gathered[rank].clone()
            return None
        pool = gathered.flatten(0, 1)
        index = (torch.arange(self.n_chains) + rank * self.n_chains) % pool.shape[0]
        self.chains = pool[index].clone()
        needed = world_size * self.n_chains
        fate = (
            f"{needed - pool.shape[0]} of them {'continues' if needed - pool.shape[0] == 1 else 'continue'} a saved "
            "chain a second time"
            if needed > pool.shape[0]
            else f"{pool.shape[0] - needed} saved chains are left out"
            if needed < pool.shape[0]
            else "each once"
        )
        return (
            f"the {pool.shape[0]} saved chains ({saved_chains} per process x {processes(saved_world)}) were pooled in "
            f"rank order and dealt out again, {self.n_chains} per process to {processes(world_size)} ({fate})"
        )


class LatentBank(Bank):
    """One latent vector per training example, indexed by the example's index in the dataset (ABP's persistent z).

    Alternating back-propagation (Han et al., AAAI 2017) warm-starts each example's latent inference from where
    the previous epoch left it (``syn_mats`` in the released code), so the latents are state, not noise. Every
    process holds the whole bank and :meth:`set` is given the updates of every process (the host gathers them),
    so the bank stays identical on all ranks however the DistributedSampler deals the examples out each epoch; a
    checkpoint therefore needs one copy, and a run may resume on another number of processes.

    The bank grows to the largest index seen. New entries are drawn from a generator seeded by ``seed`` and their
    index block, so that every rank initialises the same example to the same vector.

    Args:
        shape: shape of one latent vector.
        init: ``"normal"`` (N(0, I), the object code) or ``"zeros"`` (the sound code).
        seed: seed of the initial values.
    """

    _BLOCK = 1024

    def __init__(self, shape: Sequence[int], init: str = "normal", seed: int = 0) -> None:
        if init not in ("normal", "zeros"):
            raise ValueError(f"LatentBank init must be 'normal' or 'zeros', got {init!r}")
        self.shape = tuple(int(s) for s in shape)
        self.init, self.seed = init, seed
        self.latents = torch.empty((0, *self.shape))

    def __len__(self) -> int:
        return self.latents.shape[0]

    def _grow(self, size: int) -> None:
        blocks = []
        for start in range(len(self), size, self._BLOCK):
            block = (self._BLOCK, *self.shape)
            if self.init == "zeros":
                blocks.append(torch.zeros(block))
            else:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
                blocks.append(torch.randn(block, generator=g))
        if blocks:
            self.latents = torch.cat([self.latents.cpu(), *blocks]).to(self.latents.device)

    def reserve(self, size: int) -> None:
        """Hold latents for the examples ``0 … size − 1`` (their initial values) from now on."""
        self._grow(size)

    def get(self, index: Tensor, *, checked: bool = False) -> Tensor:
        """The latents ``(B, *shape)`` of the examples ``index (B,)``, on ``index``'s device.

        ``checked``: the caller knows every index is in ``0 … len(self) − 1`` (:meth:`reserve`), so the bank does not
        read the indices back from the device to check them and grow.
        """
        index = index.long()
        if index.numel() and not checked:
            if int(index.min()) < 0:
                raise ValueError("LatentBank indices must be >= 0: batches need the example's 'index' in the dataset")
            self._grow(int(index.max()) + 1)
        if self.latents.device != index.device:
            self.latents = self.latents.to(index.device)
        return self.latents[index].clone()

    def set(self, index: Tensor, z: Tensor, *, checked: bool = False) -> None:
        """Store ``z (B, *shape)`` for the examples ``index (B,)`` (detached; later rows win for repeated ones);
        ``checked`` as in :meth:`get`."""
        if tuple(z.shape[1:]) != self.shape or z.shape[0] != index.shape[0]:
            raise ValueError(
                f"LatentBank holds latents of shape {self.shape}; got {tuple(z.shape)} for {index.shape[0]} indices"
            )
        index = index.long().to(self.latents.device)
        if not checked:
            self._grow(int(index.max()) + 1)
        self.latents[index] = z.detach().to(self.latents.device, self.latents.dtype)

    def rank_state(self) -> Tensor | None:
        """The whole bank (the same on every rank), or ``None`` while empty."""
        return self.latents if len(self) else None

    def restore(self, gathered: Tensor, rank: int, world_size: int) -> None:
        """Take the bank from the saved ``(W_saved, N, *shape)`` stack (every saved rank holds the same bank, so any
        number of processes resumes it exactly)."""
        if tuple(gathered.shape[2:]) != self.shape:
            raise ValueError(
                f"the checkpoint's latents have shape {tuple(gathered.shape[2:])} but this model's are {self.shape}: "
                "use the generator settings the checkpoint was trained with"
            )
        self.latents = gathered[0].clone()
