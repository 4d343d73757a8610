"""Any folder of images (CelebA, LSUN or Places exports, your own photographs), searched recursively."""

from pathlib import Path
from typing import Literal

from datamodules.base import ImageDataModule, split_indices
from datamodules.image_io import Mode, Scaling, list_images
from datamodules.loading import ImageFiles, ImageTransform, OnCorrupt
from datamodules.occlusion import Occlusion


class ImageFolderDataModule(ImageDataModule):
    """All images under ``root`` (recursively), with a held-out fraction; decoded once into memory when they fit.

    The held-out images are a fixed random ``val_fraction`` of the files (the same on every run and rank). With
    ``labels_from_folders`` the first sub-folder of each file is its class (``root/<class>/.../*.jpg``); classes are
    listed in ``classes``.

    Args:
        root: the folder to search.
        image_size: side of the square samples.
        resize: the shorter side is resized to this before cropping (``None``: ``image_size``).
        crop: ``"center"`` or ``"random"`` training crops (held-out images are centre-cropped). CelebA in the
            CoopNets and ABP codes: centre crop 108 of the 178×218 images, then resize: use ``resize=None`` on a
            pre-cropped export, or ``resize`` ≈ 1.2 × ``image_size`` for a similar framing.
        mode: ``"RGB"`` or ``"L"``.
        scaling: ``"linear"`` or ``"minmax"``.
        val_fraction: share of the files held out (0 for none).
        max_images: use only the first N files (sorted by path); ``None`` for all.
        labels_from_folders: label each image by its first sub-folder.
        batch_size: images per step and process.
        num_workers: decoding worker processes per process (with ``preload``, they decode each file once; batches
            are then cut from memory in the main process).
        on_corrupt: an unreadable file is skipped and counted (``"skip"``) or stops the run (``"fail"``).
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image (a ``"mask"`` in each batch), for learning from incomplete data.
        preload: ``None`` (default) decodes the images once into memory when they fit ``preload_budget_mb``, at
            the shorter side ``resize`` (random crops) or cropped (centre crops), uint8, and serves batches from
            there, the same batches as streaming; larger sets are decoded from the files every epoch. ``True``
            always preloads, ``False`` always streams.
        preload_budget_mb: megabytes per process (each DDP rank holds the whole set) for the decoded training and
            held-out images together.
    """

    def __init__(
        self,
        root: str,
        *,
        image_size: int = 64,
        resize: int | None = None,
        crop: Literal["center", "random"] = "center",
        mode: Mode = "RGB",
        scaling: Scaling = "linear",
        val_fraction: float = 0.05,
        max_images: int | None = None,
        labels_from_folders: bool = False,
        batch_size: int = 64,
        num_workers: int = 4,
        on_corrupt: OnCorrupt = "skip",
        n_predict: int = 64,
        occlusion: Occlusion | None = None,
        preload: bool | None = None,
        preload_budget_mb: float = 2048,
    ) -> None:
        super().__init__(
            image_size=image_size,
            mode=mode,
            batch_size=batch_size,
            num_workers=num_workers,
            n_predict=n_predict,
            occlusion=occlusion,
            preload=preload,
            preload_budget_mb=preload_budget_mb,
        )
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"no image folder at {self.root}: check the path")
        paths = [p.relative_to(self.root).as_posix() for p in list_images(self.root)][:max_images]
        if not paths:
            raise FileNotFoundError(f"no image files under {self.root} (searched recursively for .jpg, .png, ...)")
        labels = None
        if labels_from_folders:
            self.classes = sorted({p.split("/")[0] for p in paths if "/" in p})
            index = {c: i for i, c in enumerate(self.classes)}
            labels = [index.get(p.split("/")[0], -1) for p in paths]
        kept, held = split_indices(len(paths), val_fraction)
        pick = lambda idx, seq: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        train = ImageTransform(image_size, resize, crop, mode, scaling)
        center = ImageTransform(image_size, resize, "center", mode, scaling)
        self.train_set = ImageFiles(self.root, pick(kept, paths), pick(kept, labels), train, on_corrupt)
        self.val_set = (
            ImageFiles(self.root, pick(held, paths), pick(held, labels), center, on_corrupt) if held else None
        )
        self.train_set.check_readable(f"under {self.root}", [self.val_set] if self.val_set is not None else [])
