"""What the image DataModules share: the loaders, the sample shape and the predict indices."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import Mode
from datamodules.loading import ArrayImages, ImageFiles, ImageLoader, ImageTransform
from datamodules.occlusion import Occluded, Occlusion
from datamodules.preload import DecodedImages, preload
from datamodules.resumable import ResumableData
from lightning_ebm.errors import UsageError


def split_indices(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """A fixed random split of ``range(n)`` into (kept, held out), the same on every run and rank, each sorted."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(0).permutation(n)
    n_val = round(val_fraction * n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def split_arrays(
    images: torch.Tensor, labels: torch.Tensor | None, val_fraction: float, transform: ImageTransform
) -> tuple[ArrayImages, ArrayImages | None]:
    """In-memory training and held-out sets (``None`` when nothing is held out), split by :func:`split_indices`."""
    train, held = split_indices(len(images), val_fraction)
    pick = lambda idx: None if labels is None else labels[idx]  # noqa: E731
    return ArrayImages(images[train], pick(train), transform), ArrayImages(
        images[held], pick(held), transform
    ) if held else None


def nothing_held_out(datamodule: ResumableData) -> list:
    """The validation or test loader of a DataModule that holds nothing out: nothing while fitting (validation is
    skipped), and a refusal for ``validate`` and ``test``, which would otherwise evaluate nothing and say nothing.

    Raises:
        UsageError: naming the DataModule and the setting that holds data out (the program exits with 2).
    """
    trainer = datamodule.trainer
    command = None if trainer is None or trainer.state.fn is None else trainer.state.fn.value
    if command in ("validate", "test"):
        raise UsageError(
            f"{type(datamodule).__name__} holds out no data (val_fraction=0), so `{command}` has nothing to evaluate: "
            "set --data.val_fraction, e.g. 0.1 (a fixed split; a model trained with val_fraction=0 has seen all of it)"
        )
    return []


class ImageDataModule(ResumableData):
    """Base of the DataModules whose items are ``{"image", "label", "index"}`` dicts (see ``datamodules.loading``).

    Subclasses set ``self.train_set`` and ``self.val_set`` (``None`` when there is no held-out split) in
    ``__init__``, so that a wrong root or name fails before any training. ``test`` uses the held-out split too.

    Sets of image files (:class:`~datamodules.loading.ImageFiles`) are decoded into memory once, when their first
    loader is made, if ``preload`` says so (``datamodules.preload``); ``preloaded`` then holds them, by split
    (``"train"``, ``"val"``; ``None`` for a split streamed from the files). Every process (DDP rank) decodes the
    whole set, since the sampler gives each rank other images every epoch.

    Args:
        image_size: side of the square samples.
        mode: ``"L"`` (1 channel) or ``"RGB"`` (3 channels).
        batch_size: images per step and process.
        num_workers: DataLoader worker processes (decoding happens there).
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image, the same ones each epoch: batches then carry a ``"mask"``
            (1 = observed) for learning from incomplete data.
        preload: for sets of image files: ``None`` decodes them once into memory when they fit
            ``preload_budget_mb``, ``True`` whatever their size, ``False`` never (they are decoded every epoch).
        preload_budget_mb: megabytes per process that the decoded sets (training and held-out together) may take.
    """

    train_set: Dataset
    val_set: Dataset | None

    def __init__(
        self,
        *,
        image_size: int,
        mode: Mode,
        batch_size: int,
        num_workers: int,
        n_predict: int,
        occlusion: Occlusion | None = None,
        preload: bool | None = None,
        preload_budget_mb: float = 2048,
    ) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("batch_size", batch_size), ("n_predict", n_predict)):
            if value < 1:
                raise ValueError(f"{type(self).__name__} needs {name} >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"{type(self).__name__} needs num_workers >= 0, got {num_workers}")
        self.image_size, self.mode = image_size, mode
        self.batch_size, self.num_workers, self.n_predict = batch_size, num_workers, n_predict
        self.occlusion = occlusion
        if preload_budget_mb < 0:
            raise ValueError(f"{type(self).__name__} needs preload_budget_mb >= 0, got {preload_budget_mb}")
        self.preload, self.preload_budget_mb = preload, preload_budget_mb
        self.preloaded: dict[str, DecodedImages | None] = {}

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        return (1 if self.mode == "L" else 3, self.image_size, self.image_size)

    def _served(self, dataset: Dataset, split: str) -> Dataset:
        """``dataset``, or its images decoded into memory when it is a set of files that ``preload`` takes there
        (decided and decoded once per split, with the budget the other split left)."""
        if not isinstance(dataset, ImageFiles):
            return dataset
        if split not in self.preloaded:
            used = sum(d.nbytes for d in self.preloaded.values() if d is not None) / 2**20
            budget = self.preload_budget_mb - used
            name = f"{type(self).__name__} ({'training' if split == 'train' else 'held-out'} set)"
            self.preloaded[split] = preload(dataset, self.preload, budget, self.num_workers, name)
        return self.preloaded[split] or dataset

    def _loader(self, dataset: Dataset, train: bool) -> ImageLoader:
        dataset = self._served(dataset, "train" if train else "val")
        # images in memory are cut into batches in this process: the workers decoded them (once)
        workers = 0 if isinstance(dataset, DecodedImages) else self.num_workers
        if self.occlusion is not None:
            dataset = Occluded(dataset, self.occlusion)
        kwargs = {
            "batch_size": self.batch_size,
            "drop_last": train and len(dataset) >= self.batch_size,
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        return self.resumable_loader(dataset, **kwargs) if train else ImageLoader(dataset, **kwargs)

    def train_dataloader(self) -> ImageLoader:
        """Shuffled training batches, in an order fixed by the run seed and the epoch (sharded across DDP ranks by
        Lightning's DistributedSampler); a run resumed mid-epoch starts with the batches it had not trained on."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> ImageLoader | list:
        """The held-out split; nothing while fitting without one (validation is skipped), a refusal otherwise."""
        return nothing_held_out(self) if self.val_set is None else self._loader(self.val_set, train=False)

    def test_dataloader(self) -> ImageLoader | list:
        """As :meth:`val_dataloader`."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Indices ``0 … n_predict − 1``; the model draws one sample per index."""
        return DataLoader(torch.arange(self.n_predict), batch_size=min(self.n_predict, 64))
