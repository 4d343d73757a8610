"""Hidden pixels for learning from incomplete data (Han et al., AAAI 2017, §4.3): each image's mask is fixed."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Occlusion:
    """Which pixels of each image are hidden, as the ABP code's ``generate_masks.m`` and ``generate_salt_pepper.m``.

    Args:
        kind: ``"block"`` (one ``size × size`` square at a random position) or ``"salt_pepper"`` (each pixel hidden
            with probability ``fraction``).
        size: side of the hidden block, in pixels.
        fraction: share of hidden pixels for ``"salt_pepper"``.
        seed: the masks are drawn from ``seed`` and the image's index, so an image keeps its mask in every epoch.
    """

    kind: Literal["block", "salt_pepper"] = "block"
    size: int = 8
    fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 < self.fraction < 1:
            raise ValueError(f"Occlusion needs size >= 1 and 0 < fraction < 1, got {self.size} and {self.fraction}")

    def mask(self, height: int, width: int, index: int) -> Tensor:
        """The ``(1, height, width)`` mask of image ``index``: 1 where a pixel is observed, 0 where it is hidden."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.kind == "salt_pepper":
            return (torch.rand((1, height, width), generator=g) >= self.fraction).float()
        if self.size > min(height, width):
            raise ValueError(f"an occluding block of {self.size} pixels does not fit {height}x{width} images")
        mask = torch.ones((1, height, width))
        top = int(torch.randint(height - self.size + 1, (), generator=g))
        left = int(torch.randint(width - self.size + 1, (), generator=g))
        mask[:, top : top + self.size, left : left + self.size] = 0
        return mask


class Occluded(Dataset):
    """``dataset``'s items with a ``"mask"`` entry (see :class:`Occlusion`); the ``"image"`` keeps every pixel, so
    that the hidden ones can score a recovery; methods must read only where the mask is 1."""

    def __init__(self, dataset: Dataset, occlusion: Occlusion) -> None:
        self.dataset, self.occlusion = dataset, occlusion

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def batched(self) -> bool:
        """Whether ``dataset`` makes whole batches (``read_batch``, see ``datamodules.loading``)."""
        return getattr(self.dataset, "batched", False)

    def read_batch(self, indices: Sequence[int], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """``dataset``'s batch with a ``"mask"`` ``(B, 1, H, W)``, each image's own."""
        batch = self.dataset.read_batch(indices, seeds)
        if "image" in batch:
            h, w = batch["image"].shape[-2:]
            batch["mask"] = torch.stack([self.occlusion.mask(h, w, int(i)) for i in batch["index"]])
        return batch

    def __getitems__(self, indices: list[int]) -> dict[str, Any] | list[dict[str, Any]]:
        return self.read_batch(indices) if self.batched else [self[i] for i in indices]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if "image" in item:
            item["mask"] = self.occlusion.mask(*item["image"].shape[-2:], int(item["index"]))
        return item
