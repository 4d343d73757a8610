"""Image files decoded once into one tensor and served a batch at a time from memory ("preloading").

A set of files that fits a memory budget is decoded once, resized to the shorter side the transform asks for, into
one flat uint8 tensor (float32 when a file has more than 8 bits a value, so that nothing is rounded); batches are
then cut from it: the centre crop is stored as it is, a random crop is taken from the stored (resized, uncropped)
image at the positions that streaming from the files would draw, and one ``(B, C, S, S)`` tensor is converted and
scaled at once. The batches are those of :class:`~datamodules.loading.ImageFiles` read one file at a time, to the
last bit: switching between the two paths changes no batch, crop or value.

The size is known before anything is decoded: a lower bound from the number of files alone (``N × C × S²`` bytes,
``S`` the stored side), then, when that fits, the exact size from every file's header (Pillow opens a file without
decoding it).
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import HIGH_DEPTH_MODES, center_crop
from datamodules.loading import ImageFiles, warn_notes, warn_skipped
from lightning_ebm.errors import UsageError

MB = 2**20
CHUNK = 64  # files decoded per DataLoader item while preloading (one transfer from a worker)


def _channels(files: ImageFiles) -> int:
    return 1 if files.transform.mode == "L" else 3


def lower_bound_bytes(files: ImageFiles) -> int:
    """Bytes that ``files`` take decoded at least, from their number alone: ``N × C × S²``, with ``S`` the crop side
    (centre crops are stored cropped) or the shorter side after resizing (random crops need the whole image)."""
    t = files.transform
    side = t.size if t.crop == "center" else t.short_side
    return len(files) * _channels(files) * side * side


def header_sizes(files: ImageFiles) -> tuple[int, int, bool]:
    """From every file's header: the values ``files`` take decoded, a margin for the ±1 pixel that JPEG draft
    decoding can add to the longer side, and whether any file has more than 8 bits a value (then stored as
    float32). A file whose header cannot be read counts for nothing (decoding will skip it)."""
    t, c = files.transform, _channels(files)
    values = margin = 0
    deep = False
    for index in range(len(files)):
        try:
            with Image.open(files.path(index)) as im:
                (width, height), mode = im.size, im.mode
        except (OSError, ValueError, SyntaxError):
            continue
        deep = deep or mode in HIGH_DEPTH_MODES
        if t.crop == "center":
            values += c * t.size * t.size
            continue
        scale = t.short_side / max(1, min(width, height))
        h, w = max(t.short_side, round(height * scale)), max(t.short_side, round(width * scale))
        values, margin = values + c * h * w, margin + c * (h + w + 1)
    return values, margin, deep


class _Chunks(Dataset):
    """Chunks of ``CHUNK`` consecutive files decoded (in a worker process) and flattened into one tensor, for one
    transfer each: ``{"data": (values,), "shapes": [(H, W), ...] ((0, 0) when skipped), "skipped": [(index, path,
    reason), ...], "notes": [...]}``."""

    def __init__(self, files: ImageFiles, dtype: torch.dtype) -> None:
        self.files, self.dtype = files, dtype

    def __len__(self) -> int:
        return math.ceil(len(self.files) / CHUNK)

    def __getitem__(self, chunk: int) -> dict[str, Any]:
        parts, shapes, skipped, notes = [], [], [], []
        t = self.files.transform
        for index in range(chunk * CHUNK, min(len(self.files), (chunk + 1) * CHUNK)):
            item = self.files.decoded(index)
            notes += item.get("notes", [])
            if "pixels" not in item:
                skipped.append((index, item["skipped"], item["reason"]))
                shapes.append((0, 0))
                continue
            x = item["pixels"]
            x = center_crop(x, t.size) if t.crop == "center" else x
            if x.dtype != self.dtype:  # uint8 in a float32 set: the values streaming gives
                x = x.float().div_(255) if x.dtype == torch.uint8 else x.mul(255).round_().to(torch.uint8)
            parts.append(x.reshape(-1))
            shapes.append(tuple(x.shape[-2:]))
        data = torch.cat(parts) if parts else torch.empty(0, dtype=self.dtype)
        return {"data": data, "shapes": shapes, "skipped": skipped, "notes": notes}


def _identity(x: Any) -> Any:
    return x


class DecodedImages(Dataset):
    """The images of an :class:`~datamodules.loading.ImageFiles` set decoded once and held in memory, served a
    batch at a time (a *batched* dataset, see ``datamodules.loading``): the same items, indices, crops and values as
    the files read one by one.

    Unreadable files keep their index (so that the order of batches, and a resumed run's, is that of the files) and
    are left out of the batches they fall in, reported under ``"skipped"`` as the files' loader does.

    Args:
        dataset: the files (their paths, labels and transform).
        data: every image's values, one after the other: uint8, or float32 in [0, 1].
        offsets: ``(N,)`` where each image starts in ``data``.
        shapes: ``(N, 2)`` each stored image's height and width (``(0, 0)`` for an unreadable file); centre-cropped
            sets store the crop, random-cropped ones the whole resized image.
        missing: the unreadable files, ``{index: reason}``.
    """

    batched = True

    def __init__(
        self, dataset: ImageFiles, data: Tensor, offsets: Tensor, shapes: Tensor, missing: dict[int, str]
    ) -> None:
        self.dataset, self.data, self.offsets, self.shapes, self.missing = dataset, data, offsets, shapes, missing
        self.transform = dataset.transform
        self.labels = torch.from_numpy(dataset.labels)
        self.channels = _channels(dataset)
        self._grid = None  # (N, C, H, W) view when every image is stored at one size: batches by one gather
        if len(shapes) and not missing and bool((shapes == shapes[0]).all()):
            self._grid = data[: len(shapes) * self.channels * int(shapes[0].prod())].view(
                len(shapes), self.channels, *shapes[0].tolist()
            )

    @classmethod
    def decode(
        cls, files: ImageFiles, dtype: torch.dtype = torch.uint8, capacity: int = 0, workers: int = 0
    ) -> "DecodedImages":
        """Decode ``files`` (in ``workers`` DataLoader worker processes, or this one) into one tensor of ``dtype``
        (``capacity`` values reserved). An unreadable file is skipped with the files' loader's warning, or stops
        the run with its name (``on_corrupt="fail"``); warnings raised while reading (an upscaled small image) are
        shown once each.

        Raises:
            UsageError: none of the files could be read, naming the folder, their number and the first error.
        """
        n, c = len(files), _channels(files)
        buffer = torch.empty(capacity, dtype=dtype)
        offsets: list[int] = []
        shapes: list[tuple[int, int]] = []
        missing: dict[int, str] = {}
        cursor = 0
        loader = DataLoader(_Chunks(files, dtype), batch_size=None, num_workers=workers, collate_fn=_identity)
        for part in loader:
            warn_notes(part["notes"])
            for k, path, reason in part["skipped"]:
                missing[k] = reason
                warn_skipped(path, len(missing), reason if path in reason else f"{path}: {reason}")
            size = part["data"].numel()
            if cursor + size > len(buffer):  # more than the headers said: grow by a quarter at least
                buffer = torch.cat([buffer[:cursor], torch.empty(max(size, len(buffer) // 4), dtype=dtype)])
            buffer[cursor : cursor + size] = part["data"]
            for h, w in part["shapes"]:
                offsets.append(cursor)
                shapes.append((h, w))
                cursor += c * h * w
        if n and len(missing) == n:
            raise UsageError(
                f"none of the {n} image files under {files.root} could be read (the first: {missing[0]}): replace "
                "them or point at a folder of readable images"
            )
        data = buffer[:cursor] if cursor >= 0.9 * len(buffer) else buffer[:cursor].clone()
        shape_table = torch.tensor(shapes, dtype=torch.long).reshape(-1, 2)
        return cls(files, data, torch.tensor(offsets, dtype=torch.long), shape_table, missing)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes the decoded images take."""
        return self.data.numel() * self.data.element_size()

    def image(self, index: int) -> Tensor:
        """The stored image ``index``, ``(C, H, W)``: a view into :attr:`data`."""
        h, w = self.shapes[index].tolist()
        start = int(self.offsets[index])
        return self.data[start : start + self.channels * h * w].view(self.channels, h, w)

    def read_batch(self, indices: Sequence[int], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """The readable images among ``indices`` as one batch ``{"image": (B, C, S, S) in [-1, 1], "label": (B,),
        "index": (B,), "skipped": [(path, reason), ...], "notes": []}`` (only the last two when none is readable);
        ``seeds``: each item's seed for its random crop (see ``ImageTransform.batch``)."""
        if self._grid is not None and self.transform.crop == "center":
            index = torch.as_tensor(indices, dtype=torch.long)
            image = self.transform.batch(self._grid[index])
            return {"image": image, "label": self.labels[index], "index": index, "skipped": [], "notes": []}
        kept, kept_seeds, skipped = [], [], []
        for k, i in enumerate(indices):
            if i in self.missing:
                skipped.append((str(self.dataset.path(i)), self.missing[i]))
                continue
            kept.append(int(i))
            kept_seeds.append(None if seeds is None else seeds[k])
        if not kept:
            return {"skipped": skipped, "notes": []}
        image = self.transform.batch([self.image(i) for i in kept], None if seeds is None else kept_seeds)
        index = torch.tensor(kept, dtype=torch.long)
        return {"image": image, "label": self.labels[index], "index": index, "skipped": skipped, "notes": []}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        return self.read_batch(indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self.missing:
            return {"skipped": str(self.dataset.path(index)), "reason": self.missing[index]}
        batch = self.read_batch([index])
        return {"image": batch["image"][0], "label": int(batch["label"][0]), "index": index}


def preload(
    files: ImageFiles, preload: bool | None, budget_mb: float, workers: int = 0, name: str = "the files"
) -> DecodedImages | None:
    """``files`` decoded into memory (:class:`DecodedImages`), or ``None`` to stream them.

    Args:
        files: the image files.
        preload: ``True`` decodes them whatever their size, ``False`` streams them, ``None`` decodes them when they
            fit ``budget_mb`` (the lower bound first, then the headers' exact size).
        budget_mb: megabytes (2²⁰ bytes) the decoded images may take.
        workers: processes that decode them (0: this one).
        name: what the one-line report of the choice calls them.
    """
    if preload is False:
        return None
    if preload is None and lower_bound_bytes(files) > budget_mb * MB:
        rank_zero_info(
            f"{name}: {len(files)} files need at least {lower_bound_bytes(files) / MB:.0f} MB decoded, over "
            f"preload_budget_mb={budget_mb:g}: streamed from disk"
        )
        return None
    values, margin, deep = header_sizes(files)
    dtype = torch.float32 if deep else torch.uint8
    need = values * dtype.itemsize
    if preload is None and need > budget_mb * MB:
        rank_zero_info(
            f"{name}: {len(files)} files need {need / MB:.0f} MB decoded, over preload_budget_mb={budget_mb:g}: "
            "streamed from disk"
        )
        return None
    decoded = DecodedImages.decode(files, dtype, values + margin, workers)
    rank_zero_info(
        f"{name}: {len(decoded) - len(decoded.missing)} images decoded once into memory ({decoded.nbytes / MB:.3g} "
        "MB); preload=false streams them from disk instead"
    )
    return decoded
