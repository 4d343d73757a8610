"""The image DataModules on tiny trees and files built in tmp_path, and the sets that ship with the install."""

import csv
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from datamodules import (
    Cifar10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    LFWDataModule,
    PhotoPatchesDataModule,
)
from datamodules.image_io import read_image
from datamodules.loading import SeededItems

WNIDS = {"n01440764": "tench, Tinca tinca", "n02123045": "tabby, tabby cat", "n02123159": "tiger cat"}


def photo(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def write_variants(folder: Path, start: int) -> list[Path]:
    """Four files of one class in four storage formats: JPEG, grayscale PNG, palette GIF and CMYK JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{start + i}.{ext}" for i, ext in enumerate(["JPEG", "png", "gif", "jpg"])]
    photo(start).save(paths[0])
    photo(start + 1).convert("L").save(paths[1])
    photo(start + 2).convert("P").save(paths[2])
    photo(start + 3).convert("CMYK").save(paths[3])
    return paths


@pytest.fixture
def imagenet(tmp_path) -> Path:
    """train/<wnid>/ with 4 images each, a flat val/ with the Kaggle solution file, and the synset names."""
    root = tmp_path / "ilsvrc"
    for k, wnid in enumerate(WNIDS):
        write_variants(root / "train" / wnid, 10 * k)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in WNIDS.items()))
    (root / "val").mkdir()
    rows = []
    for i, wnid in enumerate(list(WNIDS) * 2):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        photo(100 + i).save(root / "val" / f"{name}.JPEG")
        rows.append({"ImageId": name, "PredictionString": f"{wnid} 1 2 3 4"})
    with open(root / "LOC_val_solution.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["ImageId", "PredictionString"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_imagenet_by_wnid_and_name(imagenet):
    dm = ImageNetDataModule(
        str(imagenet), categories=["tabby", "n01440764"], image_size=16, batch_size=8, num_workers=0
    )
    assert dm.classes == ["n02123045", "n01440764"] and dm.class_names[0] == "tabby, tabby cat"
    assert dm.sample_shape == (3, 16, 16) and len(dm.train_set) == 8 and len(dm.val_set) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert sorted(batch["label"].tolist()) == [0] * 4 + [1] * 4
    val = next(iter(dm.val_dataloader()))
    assert sorted(val["label"].tolist()) == [0, 0, 1, 1]


def test_imagenet_images_per_class_and_all_classes(imagenet):
    dm = ImageNetDataModule(str(imagenet), images_per_class=2, val_images_per_class=1, image_size=8, num_workers=0)
    assert dm.classes == sorted(WNIDS) and len(dm.train_set) == 6 and len(dm.val_set) == 3
    assert [dm.train_set.path(i).name for i in range(2)] == ["img_0.JPEG", "img_1.png"]  # the first N by name


def test_imagenet_val_class_folders_and_devkit(imagenet, tmp_path):
    (imagenet / "LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no labels"):
        ImageNetDataModule(str(imagenet), num_workers=0)
    ids = {wnid: i + 1 for i, wnid in enumerate(WNIDS)}
    synsets = np.array(
        [(i, w, n) for w, i in ids.items() for n in [WNIDS[w]]],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")],
    )
    savemat(imagenet / "meta.mat", {"synsets": synsets})
    order = sorted(p.name for p in (imagenet / "val").iterdir())
    truth = [ids[list(WNIDS)[i % 3]] for i in range(len(order))]
    (imagenet / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, truth)))
    dm = ImageNetDataModule(str(imagenet), categories=["tiger cat"], image_size=8, num_workers=0)
    assert len(dm.val_set) == 2 and set(dm.val_set.labels.tolist()) == {0}
    for wnid in WNIDS:  # class folders under val/ instead
        write_variants(imagenet / "val" / wnid, 50)
    dm = ImageNetDataModule(str(imagenet), image_size=8, num_workers=0)
    assert len(dm.val_set) == 12


def test_imagenet_errors_name_what_to_fix(imagenet, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no ImageNet training folder at .*nowhere/train"):
        ImageNetDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"unknown ImageNet category 'taby'.*Close matches: tabby"):
        ImageNetDataModule(str(imagenet), categories=["taby"])
    (imagenet / "train" / "n09999999").mkdir()
    with pytest.raises(FileNotFoundError, match="n09999999 holds no image files"):
        ImageNetDataModule(str(imagenet), categories=["n09999999"])


def test_corrupt_files_are_skipped_counted_and_named_or_stop_the_run(imagenet):
    bad = imagenet / "train" / "n01440764" / "img_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    (imagenet / "train" / "n01440764" / "img_9.png").write_bytes(b"not an image")
    dm = ImageNetDataModule(str(imagenet), categories=["tench"], image_size=8, batch_size=5, num_workers=2)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\).*img_"):
        batches = list(dm.train_dataloader())
    assert sum(len(b["image"]) for b in batches) == 3  # 5 files, 2 unreadable; no worker crashed
    strict = ImageNetDataModule(str(imagenet), categories=["tench"], image_size=8, num_workers=0, on_corrupt="fail")
    with pytest.raises(ValueError, match=r"img_(0\.JPEG|9\.png).*on_corrupt='skip'"):
        list(strict.train_dataloader())


def test_storage_formats_become_the_asked_mode(tmp_path):
    paths = write_variants(tmp_path / "mixed", 0)
    rgba = tmp_path / "mixed" / "alpha.png"
    photo(7).convert("RGBA").save(rgba)
    for path in [*paths, rgba]:
        for mode, channels in (("RGB", 3), ("L", 1)):
            x = read_image(path, mode, short_side=20)
            assert x.shape[0] == channels and min(x.shape[1:]) == 20 and x.min() >= 0 and x.max() <= 1


def test_image_folder_is_recursive_with_a_fixed_held_out_split(tmp_path):
    for k, sub in enumerate(["a", "b/deeper"]):
        write_variants(tmp_path / "faces" / sub, 10 * k)
    dm = ImageFolderDataModule(
        str(tmp_path / "faces"), image_size=12, val_fraction=0.25, labels_from_folders=True, num_workers=0
    )
    again = ImageFolderDataModule(str(tmp_path / "faces"), image_size=12, val_fraction=0.25, num_workers=0)
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2 and dm.classes == ["a", "b"]
    assert list(dm.val_set.files) == list(again.val_set.files)
    assert next(iter(dm.train_dataloader()))["image"].shape[1:] == (3, 12, 12)
    with pytest.raises(FileNotFoundError, match="no image files under"):
        (tmp_path / "empty").mkdir()
        ImageFolderDataModule(str(tmp_path / "empty"))


@pytest.mark.parametrize(("workers", "preload"), [(0, False), (2, False), (0, None)])
def test_random_crops_are_new_every_epoch_and_a_resumed_run_reads_the_same_ones(tmp_path, workers, preload):
    """Crops are a function of the run seed, the epoch and the position, in any worker, not of the global RNG
    (streamed from the files, or cut from the images decoded into memory: ``preload=None`` takes this small set)."""
    for k in range(3):
        write_variants(tmp_path / "pics" / str(k), 10 * k)

    def module() -> ImageFolderDataModule:
        return ImageFolderDataModule(str(tmp_path / "pics"), image_size=12, resize=24, crop="random",
                                     val_fraction=0, batch_size=3, num_workers=workers, preload=preload)  # fmt: skip

    def epoch(loader, number: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader.sampler.set_epoch(number)
        return [(batch["index"], batch["image"]) for batch in loader]

    def by_image(batches) -> dict[int, torch.Tensor]:
        return {int(i): x for index, images in batches for i, x in zip(index, images)}

    torch.manual_seed(7)
    dm = module()
    loader = dm.train_dataloader()
    first, second = epoch(loader, 0), epoch(loader, 1)  # the same (persistent) workers read both epochs
    a, b = by_image(first), by_image(second)
    assert (dm.preloaded["train"] is None) == (preload is False)
    assert sorted(a) == list(range(12)) and sum(not torch.equal(a[i], b[i]) for i in a) >= 10  # new crops

    torch.manual_seed(123)  # another global state must not decide the crops
    resumed = module()
    resumed.load_state_dict({"shuffle_seed": dm.state_dict()["shuffle_seed"], "batches_done": 2})
    again = epoch(resumed.train_dataloader(), 0)
    assert len(again) == 2 and all(torch.equal(i, j) and torch.equal(x, y) for (i, x), (j, y) in zip(again, first[2:]))

    state = torch.get_rng_state()  # reading an item leaves the global random stream where it was
    item = SeededItems(dm.train_set)[(4, 99)]
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(
        item["image"], SeededItems(dm.train_set)[(4, 99)]["image"]
    )


def write_cifar(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [i % 10 for i in range(per_batch)]}, f)


def test_cifar10_from_the_python_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    dm = Cifar10DataModule(str(tmp_path), categories=["cat", 8], images_per_class=3)
    assert dm.classes == ["cat", "ship"] and len(dm.train_set) == 6 and len(dm.val_set) == 4
    item = dm.train_set[0]
    assert item["image"].shape == (3, 32, 32) and item["label"] in (0, 1)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f)[b"data"][3].reshape(3, 32, 32)
    torch.testing.assert_close(item["image"], torch.from_numpy(raw).float() / 127.5 - 1)
    gray = Cifar10DataModule(str(tmp_path), mode="L", image_size=16)
    assert gray.sample_shape == (1, 16, 16) and gray.train_set[0]["image"].shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"unknown CIFAR-10 class 'cats'.*did you mean cat"):
        Cifar10DataModule(str(tmp_path), categories=["cats"])
    with pytest.raises(FileNotFoundError, match=r"batches\.meta"):
        Cifar10DataModule(str(tmp_path / "missing"))


def test_digits_that_scikit_learn_ships():
    dm = DigitsDataModule(digits=[0, 1], val_fraction=0.1)
    n = len(dm.train_set) + len(dm.val_set)
    assert n == 360 and dm.sample_shape == (1, 8, 8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].min() == -1 and batch["image"].max() == 1 and set(batch["label"].tolist()) <= {0, 1}
    assert DigitsDataModule(image_size=16).train_set[0]["image"].shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        DigitsDataModule(digits=[10])


def test_lfw_faces_that_scikit_image_ships_are_the_faces_not_the_background_crops():
    dm = LFWDataModule(val_fraction=0.1)
    assert len(dm.train_set) == 90 and len(dm.val_set) == 10 and dm.sample_shape == (1, 25, 25)
    faces = torch.stack([dm.train_set[i]["image"] for i in range(90)])
    others = LFWDataModule(subset="non_faces", val_fraction=0)
    crops = torch.stack([others.train_set[i]["image"] for i in range(len(others.train_set))])
    assert len(crops) == 100 and len(LFWDataModule(subset="all", val_fraction=0).train_set) == 200
    # aligned faces have dark eyes above bright cheeks above a darker mouth: the mean face's row profile has a bump
    # at the cheeks; the mean background crop's only brightens downwards
    rows = lambda x, a, b: float(x.mean(0)[0, a:b].mean())  # noqa: E731
    bump = lambda x: min(rows(x, 11, 13) - rows(x, 7, 9), rows(x, 11, 13) - rows(x, 16, 18))  # noqa: E731
    assert bump(faces) > 0.1 and bump(crops) < 0


def test_photo_patches_hold_out_the_bottom_of_each_photograph():
    dm = PhotoPatchesDataModule(photos=["astronaut", "coffee"], image_size=64, patch_size=16, n_val=8, batch_size=4)
    assert dm.sample_shape == (3, 16, 16)
    assert [x.shape[-2] for x in dm.images] == [48, 48] and [x.shape[-2] for x in dm.held_out] == [16, 16]
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 16, 16)
    val = next(iter(dm.val_dataloader()))
    assert val.shape == (8, 3, 16, 16) and torch.equal(val, next(iter(dm.val_dataloader())))
    with pytest.raises(ValueError, match="crops of 40 must fit"):
        PhotoPatchesDataModule(photos=["coffee"], image_size=64, patch_size=40)


def test_a_method_trains_on_dict_batches(tmp_path):
    from functools import partial

    from lightning.pytorch import Trainer

    from lightning_ebm.methods import GenerativeConvNet
    from lightning_ebm.nets import ObjectDescriptor

    net = partial(ObjectDescriptor, channels=(8, 8), kernel_sizes=(3, 3), strides=(2, 1), n_out=4)
    model = GenerativeConvNet(net=net, sample_shape=(1, 8, 8), n_chains=4, langevin_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(max_steps=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path).fit(
            model, DigitsDataModule(batch_size=16)
        )
    assert model.global_step == 2 and model.chains.get().shape == (4, 1, 8, 8)


def test_a_run_resumed_mid_epoch_reads_the_batches_of_the_uninterrupted_one(tmp_path):
    """The order of batches is fixed by the seed and the epoch, and a resumed run starts where the checkpoint was."""
    from functools import partial

    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_ebm.methods import GenerativeConvNet
    from lightning_ebm.nets import ObjectDescriptor
    from tests.probes import IndexProbe

    def run(root, max_steps, ckpt_path=None, seed=0):
        seed_everything(seed)
        net = partial(ObjectDescriptor, channels=(4,), kernel_sizes=(3,), strides=(2,), n_out=2)
        model = GenerativeConvNet(net=net, sample_shape=(1, 8, 8), n_chains=2, langevin_steps=1)
        probe = IndexProbe()
        every = ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1)
        trainer = Trainer(
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=root,
            callbacks=[probe, every],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, DigitsDataModule(batch_size=200, val_fraction=0.5), ckpt_path=ckpt_path)
        return probe.seen, model

    straight, model = run(tmp_path / "a", 8)  # 898 digits: 4 batches per epoch, two epochs
    assert sorted(straight[:800]) != straight[:800] and straight[:800] != straight[800:]  # shuffled anew each epoch
    (ckpt,) = (tmp_path / "a").glob("*step=3.ckpt")
    resumed, again = run(tmp_path / "b", 8, ckpt_path=ckpt, seed=5)
    assert resumed == straight[600:]
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_occlusion_masks_are_fixed_per_image_and_hide_what_was_asked():
    from datamodules import Occlusion

    block = Occlusion("block", size=5)
    mask = block.mask(16, 16, index=3)
    assert mask.shape == (1, 16, 16) and int((mask == 0).sum()) == 25
    assert torch.equal(mask, block.mask(16, 16, index=3)) and not torch.equal(mask, block.mask(16, 16, index=4))
    noisy = Occlusion("salt_pepper", fraction=0.3).mask(64, 64, index=0)
    assert abs(float((noisy == 0).float().mean()) - 0.3) < 0.03
    with pytest.raises(ValueError, match="does not fit 4x4"):
        block.mask(4, 4, index=0)
    data = DigitsDataModule(image_size=16, batch_size=8, occlusion=block)
    first, again = (next(iter(data.val_dataloader())) for _ in range(2))
    assert first["mask"].shape == (8, 1, 16, 16) and torch.equal(first["mask"], again["mask"])
