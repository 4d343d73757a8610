"""Image grids, PNG files and logger images for the callbacks (no torchvision: see docs/engineering.md)."""

import math
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """``(..., C, H, W)`` in ``[-1, 1]`` to uint8 in ``[0, 255]`` (values outside are clipped)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Tensor:
    """Tile uint8 images ``(B, C, H, W)`` into one ``(C, H', W')`` image, ``nrow`` per row (default: square)."""
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    grid = torch.full(
        (c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value, dtype=images.dtype
    )
    for i in range(b):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def stage_grid(stages: dict[str, Tensor], nrow: int | None = None, gap: int = 6) -> Tensor:
    """One uint8 picture of sample stages ``{name: (B, C, h, w)}`` in [-1, 1], one grid per stage, left to right.

    Smaller stages (a coarse grid of a multi-grid chain) are enlarged by pixel replication to the largest size, so
    that the same sample sits at the same place in every grid.
    """
    size = max((x.shape[-2], x.shape[-1]) for x in stages.values())
    grids = []
    for x in stages.values():
        x = x.detach().float().cpu()
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="nearest")
        grids.append(make_grid(to_uint8(x), nrow=nrow))
    spacer = torch.full((grids[0].shape[0], grids[0].shape[1], gap), 255, dtype=torch.uint8)
    return torch.cat([part for grid in grids for part in (grid, spacer)][:-1], dim=2)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a uint8 ``(C, H, W)`` image (C = 1 or 3) as a PNG file, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def log_image(trainer: Trainer, key: str, image: Tensor, step: int) -> None:
    """Hand a uint8 ``(C, H, W)`` image to every attached logger that takes images (wandb, TensorBoard).

    wandb gets uint8 pixels: it no longer rescales floats, so floats in [0, 1] would come out black.
    """
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            hwc = image.permute(1, 2, 0).numpy()
            logger.log_image(key=key, images=[np.ascontiguousarray(hwc)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step)
