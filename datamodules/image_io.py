"""Reading image files with Pillow and bringing them to the [-1, 1] tensors every method expects.

torchvision is not used: each of its releases pins one torch release, and installing it can replace the CPU torch
build (docs/engineering.md, "Why torchvision and torchaudio are not dependencies").
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

Mode = Literal["L", "RGB"]
Scaling = Literal["linear", "minmax"]

_warned_upscaled: set[str] = set()  # the files already named in an upscaling warning by this process


class NonFiniteImage(ValueError):
    """An image file that decodes to NaN or infinite pixel values (a float TIFF, say)."""


def warn_upscaled(path: str | Path, width: int, height: int, short_side: int) -> None:
    """Warn, once per file and process, that the image at ``path`` is smaller than ``short_side`` and gets upscaled."""
    if min(width, height) >= short_side or str(path) in _warned_upscaled:
        return
    _warned_upscaled.add(str(path))
    factor = short_side / max(1, min(width, height))
    warnings.warn(
        f"the image {path} is {width} pixels wide and {height} high, smaller than the {short_side} pixels asked for "
        f"its shorter side (image_size/resize): it is upscaled {factor:.3g}x and comes out "
        "blurred (a 1x1 image: flat); remove it or lower image_size",
        UserWarning,
        stacklevel=2,
    )


HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I", "F"})  # Pillow modes of more than 8 bits a value


def read_image(path: str | Path, mode: Mode, short_side: int | None = None) -> Tensor:
    """Read one image file as ``(C, H, W)`` float32 in ``[0, 1]``, ``C`` = 1 for ``"L"`` and 3 for ``"RGB"``: the
    values of :func:`decode_image`, 8-bit ones divided by 255.
    """
    x = decode_image(path, mode, short_side)
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def decode_image(path: str | Path, mode: Mode, short_side: int | None = None) -> Tensor:
    """Read one image file as ``(C, H, W)``: uint8 (0..255) for 8-bit files, float32 in ``[0, 1]`` for 16-bit,
    32-bit and float ones; ``C`` = 1 for ``"L"`` and 3 for ``"RGB"``.

    Palette, CMYK, alpha and 1-bit images are converted by Pillow; 16-bit and 32-bit grayscale images keep their
    precision (scaled by their type's maximum) instead of being clipped to 8 bits. With ``short_side``, the image is
    resized (bicubic, antialiased) so that its shorter side has that many pixels, and JPEG files are decoded at the
    smallest DCT scale that still allows it (Pillow's ``draft``): several times faster for ImageNet-size files.
    An image smaller than ``short_side`` is upscaled with a warning (:func:`warn_upscaled`).

    Raises:
        NonFiniteImage: the file holds NaN or infinite values (a float TIFF), naming it and their count.
        ValueError: the file cannot be decoded, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}: check the path")
    try:
        with Image.open(path) as im:
            if short_side is not None:
                warn_upscaled(path, *im.size, short_side)
                im.draft(mode, (short_side, short_side))
            im.load()
            if im.mode in HIGH_DEPTH_MODES:
                array = np.asarray(im, dtype=np.float32)
                bad = int(array.size - np.isfinite(array).sum())
                if bad:
                    raise NonFiniteImage(
                        f"the image {path} has {bad} non-finite pixel value(s) (NaN or infinity) out of {array.size}: "
                        "fix the file (replace them with finite values) or remove it"
                    )
                if im.mode == "F":
                    top = 1.0
                elif im.mode.startswith("I;16") or array.max() <= 65535:
                    top = 65535.0
                else:
                    top = 2.0**32 - 1
                gray = torch.from_numpy(array / top).clamp(0, 1)[None]
                gray = gray if short_side is None else resize_short_side(gray, short_side)
                return gray if mode == "L" else gray.expand(3, -1, -1).clone()
            im = im.convert(mode)
            if short_side is not None and min(im.size) != short_side:
                scale = short_side / min(im.size)
                size = (max(short_side, round(im.width * scale)), max(short_side, round(im.height * scale)))
                im = im.resize(size, Image.Resampling.BICUBIC)
            array = np.array(im, dtype=np.uint8)
    except NonFiniteImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read {path} as an image ({err}): the file is corrupt or not an image") from err
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (by suffix), sorted."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def resize_short_side(x: Tensor, size: int) -> Tensor:
    """Resize ``(C, H, W)`` so that its shorter side is ``size`` (bicubic, antialiased), keeping the aspect."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    scale = size / min(h, w)
    out_size = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(x[None], size=out_size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size × size`` square of ``(C, H, W)``."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def random_crop(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A random ``size × size`` square of ``(C, H, W)`` (the global RNG, or ``generator``)."""
    h, w = x.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=generator))
    left = int(torch.randint(w - size + 1, (1,), generator=generator))
    return x[..., top : top + size, left : left + size]


def to_unit_range(x: Tensor, scaling: Scaling) -> Tensor:
    """Map ``[0, 1]`` images ``(..., C, H, W)`` to ``[-1, 1]``.

    ``"linear"``: ``2x − 1`` (``x/127.5 − 1`` on 8-bit values). ``"minmax"``: each image's own minimum and maximum go
    to −1 and 1, as the CoopNets and ABP codes do (docs/methods.md, "Pixel range, δ and σ").
    """
    if scaling == "linear":
        return x * 2 - 1
    flat = x.flatten(-3)
    low = flat.min(-1).values[..., None, None, None]
    high = flat.max(-1).values[..., None, None, None]
    return (x - low) / (high - low).clamp_min(1e-8) * 2 - 1


def check_same_size(images: Sequence[Tensor], names: Sequence[str]) -> None:
    """Raise, naming the first image whose size differs from the first one's."""
    for image, name in zip(images, names):
        if image.shape != images[0].shape:
            raise ValueError(
                f"{name} is {tuple(image.shape[-2:])} but {names[0]} is {tuple(images[0].shape[-2:])}: "
                "set image_size or crop_size so that all images give samples of one size"
            )
