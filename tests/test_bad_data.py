"""Bad data at the unit level: a pass that reads no file, a skipped file named when skipped, NaN pixels, small images
warned once per file. What the command line says of each is in the catalogue, :mod:`tests.test_bad_inputs`."""

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import ImageFolderDataModule, TextureDataModule
from datamodules.image_io import NonFiniteImage, read_image
from datamodules.loading import ImageFiles, ImageLoader, ImageTransform
from lightning_ebm.errors import UsageError


def faces(folder: Path, n: int, size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"g{i}.png")


def test_a_pass_that_reads_no_file_is_refused_instead_of_looping(tmp_path):
    for i in range(3):
        (tmp_path / f"f{i}.png").write_text("x\n")
    files = ImageFiles(tmp_path, [f"f{i}.png" for i in range(3)], None, ImageTransform(8))
    refused = pytest.raises(UsageError, match=r"could read none of its 3 image files under .*\(the first: cannot read")
    with refused, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(ImageLoader(files, batch_size=2))
    with pytest.raises(UsageError, match=r"none of the 3 image files under"):
        ImageFolderDataModule(str(tmp_path), image_size=8, num_workers=0, val_fraction=0)


def test_a_skipped_file_is_named_when_skipped_even_if_the_pass_is_abandoned(tmp_path):
    faces(tmp_path, 4, size=8)
    (tmp_path / "fake.png").write_text("x\n")
    names = ["fake.png", *(f"g{i}.png" for i in range(4))]
    loader = ImageLoader(ImageFiles(tmp_path, names, None, ImageTransform(8)), batch_size=2)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\) so far; the latest: .*fake\.png"):
        it = iter(loader)
        list(itertools.islice(it, len(loader) - 1))  # as Lightning's fetcher: stop short and abandon the generator
        del it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(loader)  # once per file: the second pass says nothing again
    assert loader.skipped == [str(tmp_path / "fake.png")]


def test_nan_pixels_are_refused_when_read_naming_the_file_and_count(tmp_path):
    array = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    array[3, 5] = np.nan
    array[7, 1] = np.inf
    path = tmp_path / "t.tif"
    Image.fromarray(array, mode="F").save(path)
    with pytest.raises(NonFiniteImage, match=rf"{path} has 2 non-finite pixel value\(s\)"):
        read_image(path, "L")
    with pytest.raises(ValueError, match=r"t\.tif has 2 non-finite"):
        TextureDataModule(str(path), image_size=16)


def test_an_image_smaller_than_asked_for_is_upscaled_with_one_warning(tmp_path):
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(dot)
    with pytest.warns(UserWarning, match=rf"{dot} is 1 pixels wide and 1 high, smaller than the 16 pixels"):
        TextureDataModule(str(dot), image_size=16)
    faces(tmp_path / "folder", 3, size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = ImageFolderDataModule(str(tmp_path / "folder"), image_size=8, num_workers=0, val_fraction=0, batch_size=3)
        for _ in range(2):
            list(dm.train_dataloader())
    upscaled = [str(w.message) for w in caught if "wide and" in str(w.message)]
    assert len(upscaled) == 3 and len({m.split(" is ")[0] for m in upscaled}) == 3, upscaled  # once per file
