"""Training loaders whose order of batches a resumed run continues exactly, even from the middle of an epoch."""

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

from datamodules.loading import EpochShuffle, ImageLoader, SeededItems
from lightning_ebm.lightning_private import batches_processed_this_epoch


class ResumableData(LightningDataModule):
    """Base of DataModules whose training order is fixed by the run seed and the epoch, and whose checkpointed state
    says how many batches of the current epoch were trained, so that a resumed run skips them (without reading them).

    Lightning restarts a loader that cannot resume from the beginning of the epoch; the shuffle of a plain
    ``DataLoader`` comes from the global random state. Both would make a resumed run read other batches than the
    uninterrupted one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shuffle_seed: int | None = None
        self._resume_batches = 0
        # after a resume on another number of processes the loader skips more (or fewer) batches of the epoch than
        # Lightning's restored count says were trained: how many, and in which epoch (the count restarts after it)
        self._extra_batches, self._extra_epoch = 0, -1

    def resumable_loader(self, dataset: Dataset, **kwargs: Any) -> ImageLoader:
        """A shuffled training loader over ``dataset`` (``kwargs``: DataLoader arguments) that continues the
        checkpointed run's order, with each item's random draws (crops) fixed by the seed, the epoch and its
        position."""
        if self._shuffle_seed is None:
            self._shuffle_seed = torch.initial_seed()  # the run's seed (seed_everything), kept in checkpoints
        skip, self._resume_batches = self._resume_batches, 0
        sampler = EpochShuffle(len(dataset), self._shuffle_seed)
        return ImageLoader(SeededItems(dataset), skip_batches=skip, sampler=sampler, **kwargs)

    def state_dict(self) -> dict[str, int]:
        """The shuffling seed, the batches of the current epoch each process has read past, the number of processes
        and the epoch (saved in checkpoints). The batches are Lightning's count of those trained, plus, in the epoch of
        a resume on another number of processes, the difference between what the loader skipped and that count."""
        if self._shuffle_seed is None:
            return {}
        if self.trainer is None:
            return {"shuffle_seed": self._shuffle_seed, "batches_done": 0, "world_size": 1, "epoch": 0}
        epoch = self.trainer.current_epoch
        done = batches_processed_this_epoch(self.trainer) + (self._extra_batches if epoch == self._extra_epoch else 0)
        return {"shuffle_seed": self._shuffle_seed, "batches_done": done, "world_size": self.trainer.world_size,
                "epoch": epoch}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue the checkpointed run's order of batches (called before the loaders are made).

        On another number of processes the order continues too: ``W`` processes that each trained ``k`` batches of
        ``B`` have used the first ``k·B·W`` examples of the epoch's shuffled order (Lightning's DistributedSampler
        deals that order out in turn), so ``W'`` processes skip ``k·W / W'`` batches each. When that is not a whole
        number it is rounded down, and fewer than ``B·W'`` examples of the epoch are seen twice.
        """
        self._shuffle_seed = state_dict.get("shuffle_seed", self._shuffle_seed)
        done = state_dict.get("batches_done", 0)
        saved = state_dict.get("world_size", 1)
        world = 1 if self.trainer is None else self.trainer.world_size
        self._resume_batches = done * saved // world
        self._extra_batches, self._extra_epoch = self._resume_batches - done, state_dict.get("epoch", -1)
        if done and done * saved % world:
            rank_zero_warn(
                f"the checkpoint's {saved} process(es) had each trained {done} batches of this epoch, which {world} "
                f"process(es) cannot share out evenly: each skips {self._resume_batches}, so a few examples of this "
                "epoch are seen twice"
            )
