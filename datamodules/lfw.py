"""The 100 faces of 25×25 pixels that scikit-image ships (``lfw_subset``): CPU-scale faces with no download."""

from typing import Literal

import numpy as np
import torch

from datamodules.base import ImageDataModule, split_arrays
from datamodules.image_io import Scaling
from datamodules.loading import ImageTransform
from datamodules.occlusion import Occlusion
from datamodules.textures import skimage_data_dir


class LFWDataModule(ImageDataModule):
    """The Labeled Faces in the Wild subset of scikit-image (grayscale, 25×25), with a fixed held-out fraction.

    scikit-image's ``lfw_subset`` holds 200 images for its face-detection example: 100 aligned faces, then 100
    "non-faces" (crops of the photographs' backgrounds). ``subset`` chooses which are served.

    Args:
        subset: ``"faces"`` (the 100 faces), ``"non_faces"`` (the 100 background crops) or ``"all"`` (all 200).
        image_size: side of the samples (25 is native; other sizes are resized bicubically).
        scaling: ``"linear"`` or ``"minmax"`` (per image, as the ABP code does for faces).
        val_fraction: share of the faces held out.
        batch_size: images per step and process.
        num_workers: DataLoader worker processes.
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image (a ``"mask"`` in each batch), for learning from incomplete data.
    """

    def __init__(
        self,
        *,
        subset: Literal["faces", "non_faces", "all"] = "faces",
        image_size: int = 25,
        scaling: Scaling = "linear",
        val_fraction: float = 0.1,
        batch_size: int = 32,
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
        folder = skimage_data_dir()
        path = None if folder is None else folder / "lfw_subset.npy"
        if path is None or not path.is_file():
            raise FileNotFoundError(f"scikit-image's lfw_subset.npy is not at {path}: pip install scikit-image")
        faces = torch.from_numpy(np.load(path).astype(np.float32)).unsqueeze(1)  # (200, 1, 25, 25)
        if len(faces) != 200:
            raise ValueError(f"{path} holds {len(faces)} images where scikit-image ships 200: reinstall scikit-image")
        faces = {"faces": faces[:100], "non_faces": faces[100:], "all": faces}[subset]
        transform = ImageTransform(image_size, None, "center", "L", scaling)
        self.train_set, self.val_set = split_arrays(faces, None, val_fraction, transform)
