"""Sliced Wasserstein distance over Laplacian-pyramid patches (Karras, Aila, Laine, Lehtinen, ICLR 2018, §5).

A sample-quality measure that needs no pretrained network: each image is decomposed into a Laplacian pyramid down
to ``min_size`` pixels; random 7×7 patches of every level, normalised per channel within each set, form two point
clouds per level; their sliced Wasserstein-1 distance is averaged over random directions, multiplied by 10³ (the
paper's reporting scale) and averaged over levels. Lower is better; a set against itself gives about the
sampling noise of the patches.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial blur of ``(B, C, H, W)`` with reflected borders."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(x: Tensor, min_size: int = 16) -> list[Tensor]:
    """Levels of ``(B, C, H, W)``, finest first: band-pass differences, then the coarsest low-pass image."""
    levels = []
    while min(x.shape[-2:]) // 2 >= min_size:
        down = _blur(x)[..., ::2, ::2]
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(x - up)
        x = down
    levels.append(x)
    return levels


def _patches(x: Tensor, n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` random ``size × size`` patches per image, ``(B·n, C, size, size)``."""
    b, _, h, w = x.shape
    size = min(size, h, w)
    top = torch.randint(h - size + 1, (b, n), generator=generator)
    left = torch.randint(w - size + 1, (b, n), generator=generator)
    rows = (top[..., None] + torch.arange(size))[..., :, None].expand(b, n, size, size)
    cols = (left[..., None] + torch.arange(size))[..., None, :].expand(b, n, size, size)
    batch = torch.arange(b)[:, None, None, None].expand(b, n, size, size)
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 1, 4, 2, 3).reshape(b * n, -1, size, size)


def _normalise(patches: Tensor) -> Tensor:
    """Zero mean and unit standard deviation per channel over the whole set; flattened to ``(N, D)``."""
    mean = patches.mean((0, 2, 3), keepdim=True)
    std = patches.std((0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((patches - mean) / std).flatten(1)


def sliced_wasserstein(
    a: Tensor, b: Tensor, n_directions: int = 512, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-1 distance between point clouds ``a: (N, D)`` and ``b: (M, D)``.

    The mean over random unit directions θ of the 1-D Wasserstein-1 distance between the projections; for
    ``N ≠ M`` the sorted projections are compared at ``max(N, M)`` common quantiles.
    """
    dirs = torch.randn(a.shape[1], n_directions, generator=generator, dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, pb = (a.double() @ dirs).sort(0).values, (b.double() @ dirs).sort(0).values
    n = max(pa.shape[0], pb.shape[0])
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return float((_quantiles(pa, q) - _quantiles(pb, q)).abs().mean())


def _quantiles(sorted_values: Tensor, q: Tensor) -> Tensor:
    """Linear interpolation of sorted columns ``(N, K)`` at quantile levels ``q`` (the mid-point convention)."""
    n = sorted_values.shape[0]
    pos = (q * n - 0.5).clamp(0, n - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = (pos - low).unsqueeze(1)
    return sorted_values[low] * (1 - frac) + sorted_values[high] * frac


def swd(
    a: Tensor,
    b: Tensor,
    *,
    patch_size: int = 7,
    patches_per_image: int = 128,
    min_size: int = 16,
    n_directions: int = 512,
    seed: int = 0,
) -> float:
    """SWD ×10³ between image sets ``a: (N, C, H, W)`` and ``b: (M, C, H, W)`` in the same range, levels averaged.

    Args:
        a: one image set, e.g. samples.
        b: the other, e.g. held-out data; same channels and size as ``a``.
        patch_size: side of the patches (Karras et al.: 7).
        patches_per_image: patches drawn from each image at each level (Karras et al.: 128).
        min_size: the coarsest pyramid level is at least this many pixels on its shorter side (Karras et al.: 16).
        n_directions: random projection directions (Karras et al.: 4 × 128).
        seed: seeds patch positions and directions, so a score is reproducible.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"swd compares image sets of one shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    g = torch.Generator().manual_seed(seed)
    scores = []
    for la, lb in zip(
        laplacian_pyramid(a.detach().float().cpu(), min_size), laplacian_pyramid(b.detach().float().cpu(), min_size)
    ):
        pa = _normalise(_patches(la, patches_per_image, patch_size, g))
        pb = _normalise(_patches(lb, patches_per_image, patch_size, g))
        scores.append(sliced_wasserstein(pa, pb, n_directions, g) * 1e3)
    return sum(scores) / len(scores)
