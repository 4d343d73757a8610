"""Datasets and loaders shared by the image DataModules: lazy files, in-memory arrays, unreadable-file handling.

Every item is a dict ``{"image": (C, S, S) in [-1, 1], "label": int (-1 when unlabelled), "index": int}``; the
methods read ``batch["image"]`` (see ``EBMModule.images``).

Datasets held in memory (:class:`ArrayImages`, ``datamodules.preload.DecodedImages``) are *batched*: they make a
whole batch at once (``read_batch``, which the DataLoader calls through ``__getitems__``), cropping and scaling one
``(B, C, S, S)`` tensor instead of B items collated one by one. The wrappers (:class:`SeededItems`, ``Occluded``)
pass batches through, and :func:`collate_images` takes a made batch as it is.
"""

import itertools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from datamodules.image_io import Mode, Scaling, center_crop, decode_image, random_crop, read_image, to_unit_range
from lightning_ebm.errors import UsageError

OnCorrupt = Literal["skip", "fail"]

_named: set[str] = set()  # the skipped files and the notes that this process has warned about (each once)


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shorter side to ``resize`` (default ``size``), crop a ``size × size`` square, scale to [-1, 1].

    Args:
        size: side of the output square.
        resize: shorter side after resizing; ``None`` resizes it to ``size`` (the whole image, centre-cropped).
        crop: ``"center"`` or ``"random"`` (a random square each time the item is read, drawn from torch's global
            generator, which the training loaders seed per item and epoch: ``SeededItems``).
        mode: ``"L"`` or ``"RGB"``.
        scaling: ``"linear"`` ([0, 255] to [-1, 1]) or ``"minmax"`` (each image's own range to [-1, 1], as the
            CoopNets and ABP codes do).
    """

    size: int
    resize: int | None = None
    crop: Literal["center", "random"] = "center"
    mode: Mode = "RGB"
    scaling: Scaling = "linear"

    def __post_init__(self) -> None:
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise ValueError(
                f"the image size must be >= 1 and the resize (shorter side before cropping) at least the image size; "
                f"got image_size={self.size}, resize={self.resize}"
            )

    @property
    def short_side(self) -> int:
        """The shorter side after resizing."""
        return self.size if self.resize is None else self.resize

    def read(self, path: Path) -> Tensor:
        """Decode, resize, crop and scale one file: ``(C, size, size)``."""
        return self(read_image(path, self.mode, short_side=self.short_side))

    def __call__(self, x: Tensor) -> Tensor:
        """Crop and scale a ``(C, H, W)`` image in [0, 1] whose shorter side is already ``short_side``."""
        x = random_crop(x, self.size) if self.crop == "random" else center_crop(x, self.size)
        return to_unit_range(x, self.scaling)

    def batch(self, images: Tensor | Sequence[Tensor], seeds: Sequence[int] | None = None) -> Tensor:
        """Crop and scale a batch: ``(B, C, size, size)`` float32 in [-1, 1].

        Args:
            images: a ``(B, C, H, W)`` tensor or B ``(C, H_i, W_i)`` images (each at least ``size`` on both sides),
                uint8 (0..255) or float (0..1).
            seeds: one seed per image for its random crop: the generator seeded with it draws the top, then the left
                edge, the draws :class:`SeededItems` makes for an item read one at a time, so both give the same
                crops; ``None`` draws from torch's global generator (as :meth:`__call__`).

        The same values as :meth:`__call__` on each image (uint8 ones divided by 255 first), to the last bit.
        """
        if self.crop == "center" and isinstance(images, Tensor):
            x = center_crop(images, self.size)
        else:
            g = None if seeds is None else torch.Generator()
            crops = []
            for k, image in enumerate(images):
                h, w = image.shape[-2:]
                if self.crop == "center":
                    top, left = (h - self.size) // 2, (w - self.size) // 2
                else:
                    if g is not None:
                        g.manual_seed(int(seeds[k]))
                    top = int(torch.randint(h - self.size + 1, (1,), generator=g))
                    left = int(torch.randint(w - self.size + 1, (1,), generator=g))
                crops.append(image[..., top : top + self.size, left : left + self.size])
            x = torch.stack(crops)
        owned = x.dtype == torch.uint8  # then x.float() is a new tensor, which can be scaled in place
        x = x.float().div_(255) if owned else x.float()
        if self.scaling == "linear":  # to_unit_range's 2x - 1 without its temporary
            return x.mul_(2).sub_(1) if owned else x.mul(2).sub_(1)
        return to_unit_range(x, self.scaling)


class ImageFiles(Dataset):
    """Image files decoded lazily, one per item (in the DataLoader's workers), never all held in memory (streaming;
    ``datamodules.preload`` decodes a set that fits in memory once).

    The paths are kept in a numpy byte array, relative to ``root`` (or to their class's folder): with 1.28 M ImageNet
    files that is 26 MB, shared copy-on-write by forked workers (a Python list of strings is copied page by page as
    workers touch the reference counts).

    Args:
        root: the folder the paths are relative to.
        files: relative paths (strings, or a numpy byte array of them, taken as it is).
        labels: class index of each file (``-1`` for none).
        folders: with it, ``files`` are relative to ``root / folders[label]``: the class folders of a layout like
            ImageNet's, written once instead of once per file.
        transform: what becomes of each decoded image.
        on_corrupt: an unreadable file is skipped (``"skip"``: the loader drops it, counts it and names it in a
            warning the first time) or stops the run with its name (``"fail"``).

    An item is ``{"image", "label", "index"}``, plus ``"notes"`` (warnings raised while reading it, such as an
    upscaled small image, for the loader to show in the main process), or ``{"skipped": path, "reason": error}``.
    """

    def __init__(
        self,
        root: Path,
        files: Sequence[str] | np.ndarray,
        labels: Sequence[int] | np.ndarray | None,
        transform: ImageTransform,
        on_corrupt: OnCorrupt = "skip",
        folders: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.folders = None if folders is None else list(folders)
        given = isinstance(files, np.ndarray) and files.dtype.kind == "S"
        self.files = files if given else np.array([f.encode() for f in files], dtype=np.bytes_)
        self.labels = np.full(len(files), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        self.transform, self.on_corrupt = transform, on_corrupt

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        """The file of item ``index``."""
        name = self.files[index].decode()
        return self.root / (name if self.folders is None else f"{self.folders[self.labels[index]]}/{name}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.decoded(index)
        if "pixels" in item:
            pixels = item.pop("pixels")
            item["image"] = self.transform(pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels)
        return item

    def decoded(self, index: int) -> dict[str, Any]:
        """Item ``index`` decoded and resized to the shorter side ``transform.short_side``, not yet cropped or
        scaled: ``{"pixels": (C, H, W) uint8, or float32 in [0, 1] for files of more than 8 bits, "label",
        "index"}`` (plus ``"notes"``), or ``{"skipped": path, "reason": error}`` (see the class)."""
        path = self.path(index)
        try:
            with warnings.catch_warnings(record=True) as caught:  # shown by the loader, in the main process
                warnings.simplefilter("always")
                pixels = decode_image(path, self.transform.mode, short_side=self.transform.short_side)
        except (OSError, ValueError) as err:
            if self.on_corrupt == "fail":
                raise ValueError(f"{err} (set on_corrupt='skip' to skip unreadable files instead)") from err
            return {"skipped": str(path), "reason": str(err)}
        item = {"pixels": pixels, "label": int(self.labels[index]), "index": index}
        if caught:
            item["notes"] = [str(w.message) for w in caught]
        return item

    def check_readable(self, where: str, others: Sequence["ImageFiles"] = (), probe: int = 256) -> None:
        """Refuse a set of which no file can be read, before any training: read files (of this set, then of
        ``others``) until one can be; give up after ``probe`` unreadable ones (the loader then refuses at the first
        pass that yields nothing).

        Raises:
            UsageError: none of the files can be read, naming ``where``, their number and the first error.
        """
        sets = [self, *others]
        total = sum(len(s) for s in sets)
        first = None
        for k, (files, index) in enumerate((s, i) for s in sets for i in range(len(s))):
            if k == probe:
                return
            try:
                files.transform.read(files.path(index))
                return
            except (OSError, ValueError) as err:
                first = first or err
        if first is not None:
            raise UsageError(
                f"none of the {total} image files {where} could be read (the first: {first}): replace them or point "
                "at a folder of readable images"
            )


class ArrayImages(Dataset):
    """Images held in memory, ``(N, C, H, W)`` uint8 (0..255) or float (0..1), resized, cropped and scaled a batch
    at a time (a *batched* dataset, see the module's docstring).

    Args:
        images: the images.
        labels: class index of each image (``-1`` for none).
        transform: the output size, crop and scaling (``mode`` is the array's own).
    """

    batched = True

    def __init__(self, images: Tensor, labels: Tensor | None, transform: ImageTransform) -> None:
        self.images = images
        self.labels = torch.full((len(images),), -1, dtype=torch.long) if labels is None else labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def read_batch(self, indices: Sequence[int], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """The images ``indices`` as one batch ``{"image": (B, C, S, S) in [-1, 1], "label": (B,), "index": (B,)}``
        (``seeds``: see :meth:`ImageTransform.batch`); the values of :meth:`__getitem__` on each, stacked."""
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index]
        short = self.transform.short_side
        if min(x.shape[-2:]) != short:
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            h, w = x.shape[-2:]
            size = (round(h * short / min(h, w)), round(w * short / min(h, w)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        image = self.transform.batch(x if self.transform.crop == "center" else list(x), seeds)
        return {"image": image, "label": self.labels[index], "index": index, "skipped": [], "notes": []}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        return self.read_batch(indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.read_batch([index])
        return {"image": batch["image"][0], "label": int(batch["label"][0]), "index": index}


def collate_images(items: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Collate dict items, setting aside the files that could not be read under ``"skipped"`` (``(path, reason)``
    pairs) and the warnings raised while reading the others under ``"notes"``. A batched dataset's batch (a dict,
    with both entries) is taken as it is."""
    if isinstance(items, dict):
        return items
    kept = [item for item in items if "skipped" not in item]
    notes = [note for item in kept for note in item.pop("notes", ())]
    batch = default_collate(kept) if kept else {}
    batch["skipped"] = [(item["skipped"], item.get("reason", "")) for item in items if "skipped" in item]
    batch["notes"] = notes
    return batch


class EpochShuffle(Sampler[tuple[int, int]]):
    """A new random order of ``range(n)`` every epoch, fixed by ``seed`` and the epoch (Lightning calls
    ``set_epoch``), so that a resumed run reads the batches the uninterrupted one would have read.

    Each index comes with a seed for that item's own random draws in this epoch, ``(index, item_seed)``: read through
    :class:`SeededItems`, random crops are then a function of the run seed, the epoch and the position, the same in
    a resumed run, in any worker process, and new every epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` from the next pass on."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 104_729) % 2**63)
        order = torch.randperm(self.n, generator=g).tolist()
        return zip(order, torch.randint(2**62, (self.n,), generator=g).tolist(), strict=True)

    def __len__(self) -> int:
        return self.n


class SeededItems(Dataset):
    """``dataset`` read at ``(index, item_seed)`` keys (from :class:`EpochShuffle`): the item is made with torch's
    global generator seeded by ``item_seed`` (and put back afterwards, so nothing else's random stream moves), which
    makes every random transform of the item reproducible: a resumed run reads the same random crops."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def batched(self) -> bool:
        """Whether ``dataset`` makes whole batches (``read_batch``)."""
        return getattr(self.dataset, "batched", False)

    def __getitems__(self, keys: list[tuple[int, int]]) -> dict[str, Any] | list[Any]:
        """A batch made at once by a batched ``dataset``, each item's random crop drawn from its own seed (the same
        crops as :meth:`__getitem__` gives one item at a time); otherwise the items one by one."""
        if not self.batched:
            return [self[key] for key in keys]
        return self.dataset.read_batch([int(i) for i, _ in keys], [int(s) for _, s in keys])

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, item_seed = key
        cpu = torch.default_generator  # its own manual_seed: 1 µs, against 65 µs for torch.manual_seed
        state = cpu.get_state()
        cpu.manual_seed(item_seed)
        try:
            return self.dataset[index]
        finally:
            cpu.set_state(state)


class _Dropping(Sampler[int]):
    """``sampler`` without its first ``n`` indices."""

    def __init__(self, sampler: Any, n: int) -> None:
        self.sampler, self.n = sampler, n

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.n)


class ImageLoader(DataLoader):
    """A DataLoader of :func:`collate_images` batches that drops unreadable files and reports them.

    The first time a file is skipped it warns, naming the file, why, and how many files this loader has skipped so
    far (once per file and process, in the main process; under DDP each rank names the files of its shard); a batch
    whose files were all unreadable is left out. Nothing stops mid-epoch because of one bad file, but a pass in which no
    file at all could be read is refused (:class:`UsageError`), instead of an endless run of empty epochs.
    Warnings raised while reading a file (an upscaled small image) are shown once each, also in the main process.

    Args:
        dataset: the images.
        skip_batches: batches the first pass leaves out (without reading them): how a run resumed in the middle of
            an epoch continues with the batches it had not trained on yet. It applies to whatever sampler the
            loader ends up with, Lightning's DistributedSampler included.
        **kwargs: DataLoader arguments.
    """

    def __init__(self, dataset: Dataset, skip_batches: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate_images)
        super().__init__(dataset, **kwargs)
        self.skip_batches = skip_batches
        self.skipped: list[str] = []  # the files skipped in the current (or last) pass
        self._reasons: dict[str, str] = {}  # every file skipped by this loader: why

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = []
        skip, self.skip_batches = self.skip_batches, 0
        skip = skip if skip < len(self) else 0  # resumed at an epoch's end: the next epoch starts afresh
        batch_sampler = self.batch_sampler
        inner = batch_sampler.sampler if skip and batch_sampler is not None else None
        if inner is not None:
            batch_sampler.sampler = _Dropping(inner, skip * batch_sampler.batch_size)
        yielded = False
        try:
            for batch in super().__iter__():
                self._report(batch.pop("skipped", []), batch.pop("notes", []))
                if batch:  # empty when every file of the batch was unreadable
                    yielded = True
                    yield batch
        finally:
            if inner is not None:
                batch_sampler.sampler = inner
        if not yielded and self.skipped:
            raise UsageError(
                f"this pass over the data could read none of its {len(self.skipped)} image files{_where(self.dataset)} "
                f"(the first: {self._reasons[self.skipped[0]]}): replace them or point at a folder of readable images"
            )

    def _report(self, skipped: list[tuple[str, str]], notes: list[str]) -> None:
        """Warn about each file skipped and each note for the first time (the warning fires as the batch arrives,
        so it is shown even when Lightning abandons the pass after its last batch)."""
        for path, reason in skipped:
            self.skipped.append(path)
            if path in self._reasons:
                continue
            self._reasons[path] = reason if path in reason else f"{path}: {reason}"
            warn_skipped(path, len(self._reasons), self._reasons[path])
        warn_notes(notes)


def warn_skipped(path: str, count: int, reason: str) -> None:
    """Warn that the unreadable file ``path`` is skipped, the ``count``-th so far, unless this process named it
    already (a callback's loader, or the decoding of a preloaded set)."""
    if path in _named:
        return
    _named.add(path)
    warnings.warn(
        f"skipped {count} unreadable image file(s) so far; the latest: {reason}. "
        "Remove or replace them, or set on_corrupt='fail' to stop at the first one.",
        UserWarning,
        stacklevel=4,
    )


def warn_notes(notes: Sequence[str]) -> None:
    """Show each warning raised while reading a file (in a worker) once per process."""
    for note in notes:
        if note not in _named:
            _named.add(note)
            warnings.warn(note, UserWarning, stacklevel=4)


def _where(dataset: Any) -> str:
    """``" under <root>"`` for a dataset of files (through its wrappers), else ``""``."""
    while not isinstance(dataset, ImageFiles) and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return f" under {dataset.root}" if isinstance(dataset, ImageFiles) else ""
