"""CIFAR-10 from the python batches already on disk (``cifar-10-batches-py``); nothing is downloaded."""

import difflib
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from datamodules.base import ImageDataModule
from datamodules.image_io import Mode, Scaling
from datamodules.loading import ArrayImages, ImageTransform
from datamodules.occlusion import Occlusion

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no CIFAR-10 file at {path}: root must hold cifar-10-batches-py/ (the python version)")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


class Cifar10DataModule(ImageDataModule):
    """CIFAR-10 (50,000 training and 10,000 test images, 32×32) held in memory as uint8; the test batch is held out.

    The python batches are pickle files: load only a copy you trust.

    Args:
        root: the folder holding ``cifar-10-batches-py/`` (or that folder itself).
        categories: class names (``cat``, ``ship``) or indices; ``None`` for all ten.
        images_per_class: the first N training images of each class; ``None`` for all.
        image_size: side of the samples (32 is native; other sizes are resized).
        mode: ``"RGB"`` or ``"L"``.
        scaling: ``"linear"`` (x / 127.5 − 1) or ``"minmax"``.
        batch_size: images per step and process.
        num_workers: DataLoader worker processes.
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image (a ``"mask"`` in each batch), for learning from incomplete data.
    """

    def __init__(
        self,
        root: str,
        categories: Sequence[str | int] | None = None,
        images_per_class: int | None = None,
        *,
        image_size: int = 32,
        mode: Mode = "RGB",
        scaling: Scaling = "linear",
        batch_size: int = 100,
        num_workers: int = 0,
        n_predict: int = 64,
        occlusion: Occlusion | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            mode=mode,
            batch_size=batch_size,
            num_workers=num_workers,
            n_predict=n_predict,
            occlusion=occlusion,
        )
        self.save_hyperparameters()
        folder = Path(root).expanduser()
        folder = folder / "cifar-10-batches-py" if (folder / "cifar-10-batches-py").is_dir() else folder
        names = [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
        wanted = list(range(len(names))) if categories is None else [self._index(c, names) for c in categories]
        self.classes = [names[i] for i in wanted]
        transform = ImageTransform(image_size, None, "center", mode, scaling)
        train = [_unpickle(folder / name) for name in TRAIN_BATCHES]
        self.train_set = self._dataset(
            np.concatenate([b[b"data"] for b in train]),
            [y for b in train for y in b[b"labels"]],
            wanted,
            images_per_class,
            transform,
        )
        test = _unpickle(folder / "test_batch")
        self.val_set = self._dataset(test[b"data"], list(test[b"labels"]), wanted, None, transform)

    @staticmethod
    def _index(category: str | int, names: list[str]) -> int:
        if isinstance(category, int) or str(category).isdigit():
            if not 0 <= int(category) < len(names):
                raise ValueError(f"CIFAR-10 class index {category} is outside 0..{len(names) - 1}")
            return int(category)
        if category in names:
            return names.index(category)
        close = difflib.get_close_matches(str(category), names, n=3)
        raise ValueError(
            f"unknown CIFAR-10 class {category!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f"; the classes are {', '.join(names)}"
        )

    def _dataset(
        self, data: np.ndarray, labels: list[int], wanted: list[int], per_class: int | None, transform: ImageTransform
    ) -> ArrayImages:
        labels_arr = np.asarray(labels)
        keep = np.concatenate([np.flatnonzero(labels_arr == c)[:per_class] for c in wanted])
        keep.sort()
        images = torch.from_numpy(data[keep].reshape(-1, 3, 32, 32))
        if self.mode == "L":  # ITU-R 601 luma, as Pillow's convert("L")
            luma = (images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            images = luma.round().clamp(0, 255).to(torch.uint8)
        remap = {c: i for i, c in enumerate(wanted)}
        return ArrayImages(images, torch.tensor([remap[int(y)] for y in labels_arr[keep]]), transform)
