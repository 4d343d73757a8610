"""Patches of the colour photographs that scikit-image ships: natural-image statistics at CPU scale."""

from collections.abc import Sequence

from datamodules.image_io import Scaling
from datamodules.textures import TextureDataModule

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "ihc", "color")


class PhotoPatchesDataModule(TextureDataModule):
    """Random square patches of scikit-image's colour photographs, with the bottom of each photograph held out.

    A :class:`~datamodules.textures.TextureDataModule` with other defaults: the photographs below, RGB, 32×32 patches
    of the images resized to a 128-pixel shorter side, the bottom 25 % of every image held out for 64 validation
    patches, 64 patches per step and 50 steps per epoch.

    Args:
        photos: scikit-image image names (or image paths); default: the colour photographs it ships.
        image_size: shorter side of every photograph after resizing.
        patch_size: side of the square patches.
        scaling: ``"linear"`` or ``"minmax"``.
        holdout: bottom fraction of every photograph kept for validation.
        n_val: held-out patches.
        batch_size: patches per step and process.
        batches_per_epoch: steps per epoch.
        n_predict: samples that ``predict`` draws.
    """

    def __init__(
        self,
        photos: Sequence[str] = PHOTOS,
        *,
        image_size: int = 128,
        patch_size: int = 32,
        scaling: Scaling = "linear",
        holdout: float = 0.25,
        n_val: int = 64,
        batch_size: int = 64,
        batches_per_epoch: int = 50,
        n_predict: int = 64,
    ) -> None:
        super().__init__(
            list(photos),
            image_size=image_size,
            crop_size=patch_size,
            mode="RGB",
            scaling=scaling,
            holdout=holdout,
            n_val=n_val,
            batch_size=batch_size,
            batches_per_epoch=batches_per_epoch,
            n_predict=n_predict,
        )
