"""ILSVRC-2012 (ImageNet) categories from the standard layout on disk.

The descriptor papers learn from single ImageNet categories with a handful to a thousand images each (Xie et al.,
ICML 2016; CoopNets, AAAI 2018); the generative-gradient paper (Dai et al., ICLR 2015) uses all 1000 classes.
"""

import csv
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.base import ImageDataModule
from datamodules.image_io import IMAGE_SUFFIXES, Mode, Scaling
from datamodules.loading import ImageFiles, ImageTransform, OnCorrupt
from datamodules.occlusion import Occlusion

SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_VAL_SOLUTION = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def _image_names(folder: Path) -> list[str]:
    """Image file names directly in ``folder``, sorted. (No ``Path`` per name: pathlib interns every part it parses,
    and the interpreter's table of interned strings never shrinks, which for 1.28 M files kept ~100 MB.)"""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def read_synset_names(root: Path) -> dict[str, list[str]]:
    """``{wnid: [name, synonym, ...]}`` from ``LOC_synset_mapping.txt`` ("n01440764 tench, Tinca tinca"), if present."""
    path = root / SYNSET_MAPPING
    if not path.is_file():
        return {}
    names = {}
    for line in path.read_text().splitlines():
        wnid, _, words = line.strip().partition(" ")
        if wnid:
            names[wnid] = [w.strip() for w in words.split(",") if w.strip()]
    return names


def _devkit_files(root: Path) -> tuple[Path, Path] | None:
    for folder in (root, root / "ILSVRC2012_devkit_t12" / "data"):
        if (folder / DEVKIT_GROUND_TRUTH).is_file() and (folder / "meta.mat").is_file():
            return folder / DEVKIT_GROUND_TRUTH, folder / "meta.mat"
    return None


def flat_val_labels(root: Path, files: Sequence[str]) -> dict[str, str]:
    """``{file name: wnid}`` for a flat ``val/`` folder, from the Kaggle solution file or the devkit's ground truth."""
    if (root / KAGGLE_VAL_SOLUTION).is_file():
        with open(root / KAGGLE_VAL_SOLUTION, newline="") as f:
            rows = {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}
        return {name: rows[Path(name).stem] for name in files if Path(name).stem in rows}
    devkit = _devkit_files(root)
    if devkit is not None:
        from scipy.io import loadmat

        truth, meta = devkit
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in truth.read_text().split()]
        if len(ids) != len(files):
            raise ValueError(
                f"{truth} labels {len(ids)} images but {root / 'val'} holds {len(files)}: the ground truth lists the "
                "50,000 validation images in file-name order; use the complete val/ folder"
            )
        return {name: wnid_of[i] for name, i in zip(files, ids)}
    raise FileNotFoundError(
        f"{root / 'val'} holds {len(files)} images in one folder but no labels: put {KAGGLE_VAL_SOLUTION} or the "
        f"devkit's {DEVKIT_GROUND_TRUTH} with meta.mat in {root}, or sort val/ into <wnid>/ folders"
    )


class ImageNetDataModule(ImageDataModule):
    """ImageNet categories from ``root/train/<wnid>/*.JPEG`` (and ``root/val``), in memory when they fit (``preload``).

    ``val/`` is either sorted into ``<wnid>/`` folders or flat with ``LOC_val_solution.csv`` (Kaggle) or the devkit's
    ``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``; without ``val/`` there is no held-out split. Labels
    are the positions of the selected categories (0 … K−1); ``classes`` and ``class_names`` list them.

    Args:
        root: the folder holding ``train/`` (and ``val/``, ``LOC_synset_mapping.txt``).
        categories: WordNet ids (``n02123045``) or names (``tabby``, from ``LOC_synset_mapping.txt``); ``None``
            for every class under ``train/``.
        images_per_class: the first N training images of each category (sorted by file name); ``None`` for all.
        val_images_per_class: likewise for the held-out split.
        image_size: side of the square samples.
        resize: the shorter side is resized to this before cropping (``None``: ``image_size``, a centre square).
        crop: ``"center"`` or ``"random"`` training crops (held-out images are always centre-cropped).
        mode: ``"RGB"`` or ``"L"``; grayscale, palette and CMYK files are converted.
        scaling: ``"linear"`` or ``"minmax"`` (per image, as the CoopNets code does).
        batch_size: images per step and process.
        num_workers: decoding worker processes per process (with ``preload``, they decode each file once; batches
            are then cut from memory in the main process).
        on_corrupt: an unreadable file is skipped and counted (``"skip"``) or stops the run (``"fail"``).
        n_predict: samples that ``predict`` draws.
        occlusion: hide pixels of every image (a ``"mask"`` in each batch), for learning from incomplete data.
        preload: ``None`` (default) decodes the images once into memory when they fit ``preload_budget_mb``, at
            the shorter side ``resize`` (random crops) or cropped (centre crops), uint8, and serves batches from
            there, the same batches as streaming; larger sets are decoded from the files every epoch. ``True``
            always preloads, ``False`` always streams.
        preload_budget_mb: megabytes per process (each DDP rank holds the whole set) for the decoded training and
            held-out images together.
    """

    def __init__(
        self,
        root: str,
        categories: Sequence[str] | None = None,
        images_per_class: int | None = None,
        val_images_per_class: int | None = None,
        *,
        image_size: int = 64,
        resize: int | None = None,
        crop: Literal["center", "random"] = "center",
        mode: Mode = "RGB",
        scaling: Scaling = "linear",
        batch_size: int = 64,
        num_workers: int = 4,
        on_corrupt: OnCorrupt = "skip",
        n_predict: int = 64,
        occlusion: Occlusion | None = None,
        preload: bool | None = None,
        preload_budget_mb: float = 2048,
    ) -> None:
        super().__init__(
            image_size=image_size,
            mode=mode,
            batch_size=batch_size,
            num_workers=num_workers,
            n_predict=n_predict,
            occlusion=occlusion,
            preload=preload,
            preload_budget_mb=preload_budget_mb,
        )
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"no ImageNet training folder at {train_dir}: root must hold train/<wnid>/*.JPEG "
                "(the ILSVRC-2012 layout)"
            )
        self.synset_names = read_synset_names(self.root)
        available = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        self.classes = self._select(categories, available)
        self.class_names = [", ".join(self.synset_names.get(w, [w])) for w in self.classes]
        label = {wnid: i for i, wnid in enumerate(self.classes)}

        # the file names of each class as one byte array (no Python string per file outlives its class's listing),
        # relative to the class folder, which the label names: 1.28 M files take 26 MB, and 36 MB with the labels
        chunks, counts = [], []
        for wnid in self.classes:
            names = _image_names(train_dir / wnid)
            if not names:
                raise FileNotFoundError(f"the class folder {train_dir / wnid} holds no image files")
            names = names[:images_per_class]
            chunks.append(np.array([n.encode() for n in names], dtype=np.bytes_))
            counts.append(len(names))
        files = np.concatenate(chunks)
        del chunks
        labels = np.repeat(np.arange(len(self.classes), dtype=np.int64), counts)
        train_crop = ImageTransform(image_size, resize, crop, mode, scaling)
        folders = [f"train/{wnid}" for wnid in self.classes]
        self.train_set = ImageFiles(self.root, files, labels, train_crop, on_corrupt, folders)

        val_files, val_labels = self._val_files(label, val_images_per_class)
        center = ImageTransform(image_size, resize, "center", mode, scaling)
        self.val_set = ImageFiles(self.root, val_files, val_labels, center, on_corrupt) if val_files else None

    def _select(self, categories: Sequence[str] | None, available: list[str]) -> list[str]:
        if not available:
            raise FileNotFoundError(f"{self.root / 'train'} holds no class folders (train/<wnid>/*.JPEG)")
        if categories is None:
            return available
        by_name: dict[str, list[str]] = {}
        for wnid, names in self.synset_names.items():
            for name in names:
                by_name.setdefault(name.lower(), []).append(wnid)
        chosen = []
        for category in categories:
            wnids = (
                [category]
                if category in self.synset_names or category in available
                else by_name.get(category.lower(), [])
            )
            if len(wnids) > 1:
                raise ValueError(
                    f"the name {category!r} belongs to several classes, {', '.join(wnids)}: give the WordNet id"
                )
            if not wnids:
                known = list(by_name) + available
                close = difflib.get_close_matches(category.lower(), known, n=5, cutoff=0.6)
                hint = f" Close matches: {', '.join(close)}." if close else ""
                source = (
                    f" or a name in {SYNSET_MAPPING}"
                    if self.synset_names
                    else f" ({SYNSET_MAPPING} is not in {self.root}, so names are unknown)"
                )
                raise ValueError(
                    f"unknown ImageNet category {category!r}: give a WordNet id under train/{source}.{hint}"
                )
            if wnids[0] not in available:
                raise FileNotFoundError(f"{category} ({wnids[0]}) has no folder {self.root / 'train' / wnids[0]}")
            chosen.append(wnids[0])
        return chosen

    def _val_files(self, label: dict[str, int], per_class: int | None) -> tuple[list[str], list[int]]:
        val_dir = self.root / "val"
        if not val_dir.is_dir():
            return [], []
        files, labels = [], []
        if any(p.is_dir() for p in val_dir.iterdir()):
            for wnid in self.classes:
                if (val_dir / wnid).is_dir():
                    names = _image_names(val_dir / wnid)[:per_class]
                    files += [f"val/{wnid}/{n}" for n in names]
                    labels += [label[wnid]] * len(names)
            return files, labels
        names = _image_names(val_dir)
        wnid_of = flat_val_labels(self.root, names)
        counts: dict[str, int] = {}
        for name in names:
            wnid = wnid_of.get(name)
            if wnid in label and (per_class is None or counts.get(wnid, 0) < per_class):
                counts[wnid] = counts.get(wnid, 0) + 1
                files.append(f"val/{name}")
                labels.append(label[wnid])
        return files, labels
