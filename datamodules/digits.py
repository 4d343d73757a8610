"""The 8×8 handwritten digits that scikit-learn ships (1,797 images): a CPU-scale set that needs no download."""

from collections.abc import Sequence

import torch

from datamodules.base import ImageDataModule, split_arrays
from datamodules.image_io import Scaling
from datamodules.loading import ImageTransform
from datamodules.occlusion import Occlusion


class DigitsDataModule(ImageDataModule):
    """scikit-learn's digits (``load_digits``), 16 gray levels scaled to [-1, 1], with a fixed held-out fraction.

    Args:
        digits: which digits (0-9) to keep; ``None`` for all. Labels are the digits themselves.
        image_size: side of the samples (8 is native; larger sizes are resized bicubically).
        scaling: ``"linear"`` (0..16 to [-1, 1]) or ``"minmax"``.
        val_fraction: share of the images held out.
        batch_size: images per step and process.
        num_workers: DataLoader worker processes.
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image (a ``"mask"`` in each batch), for learning from incomplete data.
    """

    def __init__(
        self,
        digits: Sequence[int] | None = None,
        *,
        image_size: int = 8,
        scaling: Scaling = "linear",
        val_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        n_predict: int = 64,
        occlusion: Occlusion | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            mode="L",
            batch_size=batch_size,
            num_workers=num_workers,
            n_predict=n_predict,
            occlusion=occlusion,
        )
        self.save_hyperparameters()
        from sklearn.datasets import load_digits

        data = load_digits()
        images = torch.from_numpy(data.images).float().div(16).unsqueeze(1)
        labels = torch.from_numpy(data.target)
        if digits is not None:
            unknown = sorted(set(digits) - set(range(10)))
            if unknown:
                raise ValueError(f"digits must be in 0..9, got {unknown}")
            keep = torch.isin(labels, torch.tensor(list(digits)))
            images, labels = images[keep], labels[keep]
        transform = ImageTransform(image_size, None, "center", "L", scaling)
        self.train_set, self.val_set = split_arrays(images, labels, val_fraction, transform)
