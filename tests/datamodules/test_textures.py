"""TextureDataModule: names, paths, sizes, modes, scaling, crops, and the errors a user can cause."""

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import TextureDataModule
from datamodules.image_io import read_image, to_unit_range
from tests.conftest import stripes


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_shipped_textures_by_name(name):
    dm = TextureDataModule(name, image_size=32)
    assert dm.sample_shape == (1, 32, 32)
    batch = next(iter(dm.train_dataloader()))
    x = batch["image"]
    assert batch["index"].tolist() == [0]
    assert x.shape == (1, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.05


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown texture 'bricks'.*Did you mean 'brick'.*brick, grass, gravel"):
        TextureDataModule("bricks")


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "wall.png"
    with pytest.raises(FileNotFoundError, match=r"nowhere/wall\.png"):
        TextureDataModule(str(missing))


def test_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        TextureDataModule(str(tmp_path / "empty"))


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        TextureDataModule(str(bad))


def test_crop_larger_than_the_image_says_both_sizes(texture_file):
    with pytest.raises(ValueError, match=r"crop_size 40 .*stripes.png.*24x24"):
        TextureDataModule(str(texture_file), image_size=None, crop_size=40)


def test_file_and_folder_paths(texture_file, tmp_path):
    Image.fromarray(stripes(period=3)).save(texture_file.parent / "more.png")
    one = TextureDataModule(str(texture_file), image_size=None)
    both = TextureDataModule(str(texture_file.parent), image_size=None, batch_size=2)
    assert one.sample_shape == (1, 24, 24) and len(both.files) == 2
    batch = next(iter(both.train_dataloader()))
    assert batch["image"].shape == (2, 1, 24, 24) and batch["index"].tolist() == [0, 1]


def test_rgb_mode_and_minmax_scaling(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(stripes(rgb=True)).save(path)
    dm = TextureDataModule(str(path), image_size=None, mode="RGB", scaling="minmax")
    x = dm.images[0]
    assert dm.sample_shape == (3, 24, 24)
    assert x.min().item() == pytest.approx(-1) and x.max().item() == pytest.approx(1)
    linear = TextureDataModule(str(path), image_size=None, mode="RGB").images[0]
    torch.testing.assert_close(linear, torch.from_numpy(stripes(rgb=True)).permute(2, 0, 1).float() / 127.5 - 1)
    gray = TextureDataModule(str(path), image_size=None, mode="L")
    assert gray.sample_shape == (1, 24, 24)


def test_sixteen_bit_images_keep_their_precision(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    x = read_image(path, "L")
    torch.testing.assert_close(x, torch.from_numpy(values.astype(np.float32) / 65535)[None])


def test_minmax_scales_each_image_by_itself():
    x = torch.stack([torch.linspace(0.2, 0.4, 16).reshape(1, 4, 4), torch.linspace(0.0, 1.0, 16).reshape(1, 4, 4)])
    y = to_unit_range(x, "minmax")
    assert torch.allclose(y.amin((1, 2, 3)), torch.tensor([-1.0, -1.0])) and torch.allclose(
        y.amax((1, 2, 3)), torch.ones(2)
    )


def test_resize_and_crops_are_reproducible_per_epoch(texture_file):
    dm = TextureDataModule(str(texture_file), image_size=32, crop_size=16, batch_size=4)
    assert dm.sample_shape == (1, 16, 16)
    first = next(iter(dm.train_dataloader()))["image"]
    again = next(iter(dm.train_dataloader()))["image"]
    assert first.shape == (4, 1, 16, 16) and torch.equal(first, again)
    assert not torch.equal(first[0], first[1])  # different crops within a batch
    val = next(iter(dm.val_dataloader()))
    assert val.shape == (1, 1, 16, 16)


def test_predict_loader_gives_indices():
    dm = TextureDataModule("brick", image_size=16, n_predict=5)
    assert torch.equal(next(iter(dm.predict_dataloader())), torch.arange(5))


def test_bad_counts_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        TextureDataModule("brick", batch_size=0)


def test_whole_images_of_different_sizes_are_named(tmp_path):
    Image.fromarray(stripes(24)).save(tmp_path / "a.png")
    Image.fromarray(stripes(32)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png is \(32, 32\) but a\.png is \(24, 24\)"):
        TextureDataModule(str(tmp_path), image_size=None)
    assert TextureDataModule(str(tmp_path), image_size=20).sample_shape == (1, 20, 20)
