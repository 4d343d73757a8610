"""Image grids, captions, PNG files and logger images for the callbacks (no torchvision: see docs/engineering.md)."""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """``(..., C, H, W)`` in ``[-1, 1]`` to uint8 in ``[0, 255]`` (values outside are clipped)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_shape(b: int, h: int, w: int, nrow: int | None = None, padding: int = 2) -> tuple[int, int]:
    """The height and width of :func:`make_grid`'s tiling of ``b`` images ``h × w``."""
    nrow = nrow or math.ceil(math.sqrt(b))
    return math.ceil(b / nrow) * (h + padding) + padding, nrow * (w + padding) + padding


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Tensor:
    """Tile uint8 images ``(B, C, H, W)`` into one ``(C, H', W')`` image, ``nrow`` per row (default: square)."""
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    grid = torch.full((c, *grid_shape(b, h, w, nrow, padding)), pad_value, dtype=images.dtype)
    for i in range(b):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


MIN_SIDE = 256
"""The shorter side, in pixels, that grids and animation frames are enlarged to at least."""


def enlargement(
    counts: Sequence[int], h: int, w: int, nrow: int | None = None, gap: int = 12, min_side: int = MIN_SIDE
) -> int:
    """The smallest whole factor by which to enlarge images ``h × w`` so that grids of ``counts`` of them side by
    side, ``gap`` pixels apart (as :func:`side_by_side` puts them), are at least ``min_side`` on the shorter side."""
    factor = 1
    while True:
        shapes = [grid_shape(b, h * factor, w * factor, nrow) for b in counts]
        if min(max(s[0] for s in shapes), sum(s[1] for s in shapes) + gap * (len(shapes) - 1)) >= min_side:
            return factor
        factor += 1


def enlarge(image: Tensor, factor: int) -> Tensor:
    """Enlarge uint8 images ``(..., H, W)`` to ``(..., factor·H, factor·W)``, each pixel a ``factor²`` block."""
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def pad(image: Tensor, height: int, width: int) -> Tensor:
    """A uint8 ``(C, H, W)`` image on a white ``(C, height, width)`` canvas (height >= H, width >= W), top left."""
    canvas = torch.full((image.shape[0], height, width), 255, dtype=torch.uint8)
    canvas[:, : image.shape[1], : image.shape[2]] = image
    return canvas


def side_by_side(grids: Sequence[Tensor], gap: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """Uint8 grids ``(C, h_i, w_i)`` left to right, top-aligned on white, ``gap`` pixels apart.

    Returns the picture ``(C, max h_i, Σ w_i + gaps)`` and each grid's columns ``(left, right)`` in it.
    """
    height = max(g.shape[1] for g in grids)
    parts, spans, left = [], [], 0
    for g in grids:
        if parts:
            parts.append(torch.full((g.shape[0], height, gap), 255, dtype=torch.uint8))
            left += gap
        parts.append(pad(g, height, g.shape[2]))
        spans.append((left, left + g.shape[2]))
        left += g.shape[2]
    return torch.cat(parts, dim=2), spans


def font() -> ImageFont.ImageFont:
    """The caption font: Pillow's default bitmap font (crisp at any enlargement; Latin-1 glyphs only, so no →)."""
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def text_width(text: str) -> int:
    """The width in pixels of ``text`` in the caption font."""
    return math.ceil(font().getlength(text))


def captioned(
    picture: Tensor, lines: Sequence[str] = (), labels: Sequence[tuple[str, int, int]] = (), margin: int = 4
) -> Tensor:
    """A uint8 picture ``(C, H, W)`` (C = 1 or 3) under a white caption band, in black in :func:`font`.

    The band holds ``lines`` left-aligned, then one row with each label ``(text, left, right)`` centred over the
    picture's columns ``left:right`` (panel names, separators, class names). The band and the picture are widened
    with white when a line is wider than the picture. Returns ``(C, band + H, W')``.
    """
    line_height = font().getbbox("Ag|")[3] + 3
    band = (len(lines) + (1 if labels else 0)) * line_height + 2 * margin
    width = max([picture.shape[2], *(text_width(line) + 2 * margin for line in lines)])
    array = np.full((band, width, picture.shape[0]), 255, dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if picture.shape[0] == 1 else array)
    draw = ImageDraw.Draw(image)
    ink = 0 if picture.shape[0] == 1 else (0, 0, 0)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_height), line, fill=ink, font=font())
    top = margin + len(lines) * line_height
    for text, left, right in labels:
        draw.text((max(0, (left + right - text_width(text)) // 2), top), text, fill=ink, font=font())
    band_pixels = torch.from_numpy(np.asarray(image).copy()).reshape(band, width, -1).permute(2, 0, 1)
    return torch.cat([band_pixels, pad(picture, picture.shape[1], width)], dim=1)


def stage_grid(
    stages: dict[str, Tensor],
    nrow: int | None = None,
    gap: int = 12,
    *,
    title: Sequence[str] = (),
    separators: Sequence[str] = (),
    column_labels: dict[str, Sequence[str]] | None = None,
    min_side: int = MIN_SIDE,
) -> Tensor:
    """One captioned uint8 picture ``(C, H, W)`` of image stages ``{name: (B_i, C, h, w)}`` in [-1, 1], one grid
    per stage, left to right, each named above its grid.

    Smaller stages (a coarse grid of a multi-grid chain) are enlarged by pixel replication to the largest size, so
    that the same sample sits at the same place in every grid. Every image is then enlarged by the same whole
    factor (nearest neighbour), the smallest that makes the tiled picture at least ``min_side`` pixels on its
    shorter side; the 2-pixel padding and the gaps stay as they are. A stage with fewer images than the others makes
    a smaller grid, padded with white.

    Args:
        stages: the panels, by the name written over each.
        nrow: images per row of every grid (default: square grids).
        gap: pixels between grids.
        title: caption lines above the panel names.
        separators: ``len(stages) - 1`` texts written in the gaps between panels (``"|"``, ``"->"``).
        column_labels: ``{stage: [text per column]}`` written over that stage's columns (a class per column).
        min_side: the shorter side, in pixels, to enlarge the tiled picture to at least.
    """
    size = max((x.shape[-2], x.shape[-1]) for x in stages.values())
    images = []
    for x in stages.values():
        x = x.detach().float().cpu()
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="nearest")
        images.append(to_uint8(x))

    factor = enlargement([len(x) for x in images], *size, nrow=nrow, gap=gap, min_side=min_side)
    picture, spans = side_by_side([make_grid(enlarge(x, factor), nrow=nrow) for x in images], gap)
    labels = [(name, left, right) for name, (left, right) in zip(stages, spans)]
    labels += [(text, spans[i][1], spans[i + 1][0]) for i, text in enumerate(separators)]
    for name, texts in (column_labels or {}).items():  # the class names sit right above the grid
        left, cell = spans[list(stages).index(name)][0] + 1, size[1] * factor + 2  # make_grid pads with 2 pixels
        picture = captioned(picture, labels=[(t, left + j * cell, left + (j + 1) * cell) for j, t in enumerate(texts)])
    return captioned(picture, title, labels)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a uint8 ``(C, H, W)`` image (C = 1 or 3) as a PNG file, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def log_image(trainer: Trainer, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
    """Hand a uint8 ``(C, H, W)`` image to every attached logger that takes images (wandb, TensorBoard).

    wandb gets uint8 pixels: it no longer rescales floats, so floats in [0, 1] would come out black. ``caption``
    goes to wandb as the image's caption.
    """
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
            extra = {} if caption is None else {"caption": [caption]}
            logger.log_image(key=key, images=[hwc], step=step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step)
