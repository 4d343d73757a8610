"""Texture images: the scikit-image textures by name, or any image file or folder by path.

The generative ConvNet learns a stationary texture from ONE image (Xie et al., ICML 2016, §6.1): the whole image
(the paper) or random crops of it.
"""

import difflib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.image_io import (
    IMAGE_SUFFIXES,
    Mode,
    Scaling,
    center_crop,
    check_same_size,
    list_images,
    random_crop,
    read_image,
    resize_short_side,
    to_unit_range,
    warn_upscaled,
)

TEXTURE_NAMES = ("brick", "grass", "gravel")


def skimage_data_dir() -> Path | None:
    """The data folder of the installed scikit-image (found without importing it), or ``None``."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def shipped_images() -> dict[str, Path]:
    """The images that the installed scikit-image ships, by name (file stem): ``{"brick": Path, ...}``."""
    folder = skimage_data_dir()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def resolve_texture(texture: str) -> list[Path]:
    """The files a texture entry names: a shipped image's name, an image file, or a folder of images."""
    shipped = shipped_images()
    if texture in shipped:
        return [shipped[texture]]
    path = Path(texture).expanduser()
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FileNotFoundError(
                f"the folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}): point at a folder of "
                "images or at one image file"
            )
        return files
    if path.is_file():
        return [path]
    if path.suffix or "/" in texture or "\\" in texture:
        raise FileNotFoundError(f"no texture image or folder at {path}: check the path")
    close = difflib.get_close_matches(texture, list(shipped), n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    others = sorted(set(shipped) - set(TEXTURE_NAMES))
    raise ValueError(
        f"unknown texture {texture!r}.{hint} The textures shipped with scikit-image are {', '.join(TEXTURE_NAMES)}; "
        f"its other images are {', '.join(others)}. Or give the path of an image file or a folder of images."
    )


class TextureCrops(IterableDataset):
    """Random ``crop_size`` crops (or the whole images) of a few texture images, ``length`` samples per epoch.

    Yields ``{"image": (C, H, W)}``; whole images also carry ``"index"``, the image's number, which methods with
    one latent vector per training example (alternating back-propagation) key on. Crops carry none: each is a new
    example.

    The crop positions come from a generator seeded by the run seed, the rank and the epoch, so each DDP rank
    draws its own crops and a resumed run draws exactly the crops the uninterrupted run would have drawn.

    Args:
        images: ``(C, H, W)`` images in [-1, 1]; of one size when ``crop_size`` is ``None``.
        crop_size: side of the square crops; ``None`` yields the whole images in turn.
        length: samples per epoch (per rank).
        seed_epoch_rank: returns the run seed, the current epoch and the global rank.
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        crop_size: int | None,
        length: int,
        seed_epoch_rank: Callable[[], tuple[int, int, int]],
    ) -> None:
        self.images, self.crop_size, self.length = images, crop_size, length
        self.seed_epoch_rank = seed_epoch_rank

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, Tensor | int]]:
        seed, epoch, rank = self.seed_epoch_rank()
        g = torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + epoch * 104_729) % 2**63)
        for k in range(self.length):
            image = self.images[k % len(self.images)]
            if self.crop_size is None:
                yield {"image": image, "index": k % len(self.images)}
                continue
            yield {"image": random_crop(image, self.crop_size, g)}


class TextureDataModule(LightningDataModule):
    """One or a few texture images, whole or as random crops, in [-1, 1].

    Images load when the DataModule is built, so a wrong name, path or size fails before any training.

    Args:
        textures: one entry or a list; each is a scikit-image name (``brick``, ``grass``, ``gravel`` and the other
            images it ships), an image file, or a folder of images.
        image_size: resize each image so its shorter side is this many pixels (``None``: native size).
        crop_size: learn from random square crops of this side; ``None`` learns from the whole (centre-square)
            image, as the paper does.
        mode: ``"L"`` (grayscale, 1 channel) or ``"RGB"`` (3 channels).
        scaling: ``"linear"`` maps pixel values [0, 255] to [-1, 1]; ``"minmax"`` maps each image's own range to
            [-1, 1] (the CoopNets/ABP codes).
        holdout: the bottom fraction of every image is held out (crop mode only): training crops come from above it,
            the ``n_val`` validation and test crops from inside it. ``0`` validates on the training images.
        n_val: held-out crops (with ``holdout``), drawn once with a fixed seed.
        batch_size: observed images per training step (per process).
        batches_per_epoch: training steps per epoch; with the default 1, every epoch is one step.
        n_predict: number of samples ``predict`` draws (in batches of at most 64).
    """

    def __init__(
        self,
        textures: str | Sequence[str] = "brick",
        *,
        image_size: int | None = 64,
        crop_size: int | None = None,
        mode: Mode = "L",
        scaling: Scaling = "linear",
        holdout: float = 0.0,
        n_val: int = 16,
        batch_size: int = 1,
        batches_per_epoch: int = 1,
        n_predict: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("n_predict", n_predict),
            ("n_val", n_val),
            ("image_size", 1 if image_size is None else image_size),
            ("crop_size", 1 if crop_size is None else crop_size),
        ):
            if value < 1:
                raise ValueError(f"TextureDataModule needs {name} >= 1, got {value}")
        entries = [textures] if isinstance(textures, str) else list(textures)
        if not entries:
            raise ValueError("TextureDataModule needs at least one texture name or path")
        files = [f for entry in entries for f in resolve_texture(entry)]
        loaded = [read_image(f, mode) for f in files]
        if image_size is not None:
            for f, x in zip(files, loaded):
                warn_upscaled(f, x.shape[-1], x.shape[-2], image_size)
            loaded = [resize_short_side(x, image_size) for x in loaded]
        if crop_size is not None:
            for f, x in zip(files, loaded):
                if crop_size > min(x.shape[-2:]):
                    raise ValueError(
                        f"crop_size {crop_size} is larger than the image {f.name}, which is "
                        f"{x.shape[-2]}x{x.shape[-1]} after resizing (image_size={image_size}): lower crop_size or "
                        "raise image_size"
                    )
        else:
            loaded = [center_crop(x, min(x.shape[-2:])) for x in loaded]
        self.files = files
        self.images = [to_unit_range(x, scaling) for x in loaded]
        self.held_out: list[Tensor] = []
        self._seed: int | None = None
        if crop_size is None:
            check_same_size(self.images, [f.name for f in files])
        if holdout:
            self._hold_out(holdout, crop_size)

    def _hold_out(self, holdout: float, crop_size: int | None) -> None:
        """Cut the bottom ``holdout`` of every image off the training images into ``held_out``."""
        if crop_size is None or not 0 < holdout < 1:
            raise ValueError(
                f"holdout needs crop_size and a fraction in (0, 1); got holdout={holdout}, crop_size={crop_size}"
            )
        train, held = [], []
        for f, x in zip(self.files, self.images):
            cut = round(x.shape[-2] * (1 - holdout))
            if min(cut, x.shape[-2] - cut, x.shape[-1]) < crop_size:
                raise ValueError(
                    f"holdout={holdout} splits {f.name} ({x.shape[-2]}x{x.shape[-1]}) into {cut} and "
                    f"{x.shape[-2] - cut} rows, and crops of {crop_size} must fit in both: lower crop_size or raise "
                    "image_size"
                )
            train.append(x[:, :cut])
            held.append(x[:, cut:])
        self.images, self.held_out = train, held

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one training sample."""
        c = 1 if self.hparams.mode == "L" else 3
        if self.hparams.crop_size is not None:
            return (c, self.hparams.crop_size, self.hparams.crop_size)
        return (c, *self.images[0].shape[-2:])

    def _seed_epoch_rank(self) -> tuple[int, int, int]:
        if self._seed is None:
            self._seed = torch.initial_seed()  # the run's seed (seed_everything), kept in checkpoints
        if self.trainer is None:
            return self._seed, 0, 0
        return self._seed, self.trainer.current_epoch, self.trainer.global_rank

    def state_dict(self) -> dict[str, int]:
        """The crop seed, so that a resumed run draws the crops of the uninterrupted one."""
        return {} if self._seed is None else {"seed": self._seed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Take the crop seed of the checkpointed run."""
        self._seed = state_dict.get("seed", self._seed)

    def train_dataloader(self) -> DataLoader:
        """Random crops (or the whole images, with their ``"index"``), ``batch_size × batches_per_epoch`` per epoch,
        as ``{"image": (B, C, H, W)}`` batches."""
        hp = self.hparams
        dataset = TextureCrops(self.images, hp.crop_size, hp.batch_size * hp.batches_per_epoch, self._seed_epoch_rank)
        return DataLoader(dataset, batch_size=hp.batch_size)

    def reference_samples(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` training samples ``(n, C, H, W)``, what a perfect sampler would give: random crops of the training
        images (above the held-out rows), or the whole images in turn, drawn from ``generator`` (default: seed 0).
        ``callbacks.SampleQuality`` scores them against the held-out images as the floor of ``val/swd``."""
        g = torch.Generator().manual_seed(0) if generator is None else generator
        crops = []
        for k in range(n):
            image = self.images[k % len(self.images)]
            crops.append(random_crop(image, self.hparams.crop_size or image.shape[-1], g))  # whole images: square
        return torch.stack(crops)

    def _eval_images(self) -> Tensor:
        size = self.hparams.crop_size
        if self.held_out:
            g = torch.Generator().manual_seed(0)
            return torch.stack(
                [random_crop(self.held_out[k % len(self.held_out)], size, g) for k in range(self.hparams.n_val)]
            )
        if size is None:
            return torch.stack(self.images)
        return torch.stack([center_crop(x, size) for x in self.images])

    def val_dataloader(self) -> DataLoader:
        """The held-out crops, or else the observed images (centre crops in crop mode), in one batch."""
        images = self._eval_images()
        return DataLoader(images, batch_size=len(images))

    def test_dataloader(self) -> DataLoader:
        """As :meth:`val_dataloader`."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Indices ``0 … n_predict − 1``; the model draws one sample per index."""
        return DataLoader(torch.arange(self.hparams.n_predict), batch_size=min(self.hparams.n_predict, 64))
