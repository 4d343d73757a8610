"""Image files decoded once into memory (``datamodules.preload``): the batches of streaming, at memory speed."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from PIL import Image

from datamodules import DigitsDataModule, ImageFolderDataModule, ImageNetDataModule, Occlusion
from datamodules.image_io import center_crop, to_unit_range
from datamodules.loading import EpochShuffle, ImageLoader, SeededItems
from datamodules.preload import DecodedImages
from lightning_ebm.errors import UsageError


def picture(path: Path, seed: int, size: tuple[int, int], mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)


def tree(root: Path, bad: int = 0) -> Path:
    """12 images of several sizes, aspects and storage formats (a large JPEG decoded at a draft scale, a 16-bit
    grayscale PNG kept at 16 bits, palette, CMYK) in two class folders, and ``bad`` files that are not images."""
    for k, sub in enumerate(["a", "b"]):
        (root / sub).mkdir(parents=True)
        picture(root / sub / "wide.png", 10 * k, (40, 30))
        picture(root / sub / "tall.jpg", 10 * k + 1, (30, 44))
        picture(root / sub / "big.jpg", 10 * k + 2, (200, 150))
        picture(root / sub / "pal.gif", 10 * k + 3, (36, 36), "P")
        picture(root / sub / "cmyk.jpg", 10 * k + 4, (50, 32), "CMYK")
    deep = np.random.default_rng(5).integers(0, 65536, (34, 28), dtype=np.uint16)
    Image.fromarray(deep).save(root / "a" / "deep.png")  # mode I;16
    picture(root / "b" / "gray.png", 6, (32, 32), "L")
    for i in range(bad):
        (root / "b" / f"bad{i}.png").write_text("not an image\n")
    return root


def module(root: Path, preload: bool | None, **kwargs) -> ImageFolderDataModule:
    options = dict(image_size=16, val_fraction=0, batch_size=4, num_workers=0, labels_from_folders=True)
    return ImageFolderDataModule(str(root), preload=preload, **{**options, **kwargs})


def epochs(dm: ImageFolderDataModule, n: int = 2, seed: int = 3) -> list[dict]:
    """The training batches of ``n`` epochs, read after seeding the run with ``seed``."""
    torch.manual_seed(seed)
    loader = dm.train_dataloader()
    batches = []
    for epoch in range(n):
        loader.sampler.set_epoch(epoch)
        batches += list(loader)
    return batches


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize(
    ("crop", "resize", "workers"), [("center", None, 0), ("random", 24, 0), ("random", 24, 2)], ids=str
)
def test_preloaded_batches_are_the_streamed_ones_to_the_last_bit(tmp_path, crop, resize, workers):
    """Same order, crops, labels and values: switching paths changes nothing (``workers`` decode the preload)."""
    root = tree(tmp_path / "pics")
    streamed = module(root, False, crop=crop, resize=resize)
    a, b = epochs(streamed), epochs(module(root, True, crop=crop, resize=resize, num_workers=workers))
    assert_same_batches(a, b)
    minmax = module(root, True, crop=crop, resize=resize, num_workers=workers, scaling="minmax")
    assert_same_batches(epochs(module(root, False, crop=crop, resize=resize, scaling="minmax")), epochs(minmax))
    decoded = minmax.preloaded["train"]
    assert isinstance(decoded, DecodedImages) and streamed.preloaded["train"] is None
    assert decoded.data.dtype == torch.float32  # the 16-bit file keeps its precision: the whole set is float32
    assert sorted(int(i) for batch in a[: len(a) // 2] for i in batch["index"]) == list(range(12))
    if crop == "random":  # the whole resized images are kept: 24 pixels on the shorter side, the longer one intact
        assert decoded.image(0).shape[0] == 3 and min(decoded.image(0).shape[1:]) == 24
        assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a, a[len(a) // 2 :]))  # new crops


def test_a_uint8_set_is_stored_as_uint8_and_held_out_images_too(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(10):
        picture(root / f"p{i}.png", i, (30 + i, 24))
    dm = module(root, None, val_fraction=0.2, crop="random", resize=20)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert dm.preloaded["train"].data.dtype == torch.uint8 and dm.preloaded["val"].data.dtype == torch.uint8
    widths = [round((30 + int(name[1:-4])) * 20 / 24) for name in dm.train_set.files.astype(str)]
    assert dm.preloaded["train"].nbytes == sum(3 * 20 * w for w in widths)  # whole resized images, 1 byte a value
    assert dm.preloaded["val"].nbytes == 2 * 3 * 16 * 16  # held-out images are centre-cropped: stored cropped
    stream = module(root, False, val_fraction=0.2, crop="random", resize=20)
    assert_same_batches(list(val), list(stream.val_dataloader()))  # centre crops of the held-out images
    assert next(iter(train))["image"].shape == (4, 3, 16, 16)


def test_a_run_resumed_mid_epoch_reads_the_preloaded_batches_of_the_uninterrupted_one(tmp_path):
    root = tree(tmp_path / "pics")
    straight = module(root, True, crop="random", resize=24, batch_size=3)
    first = epochs(straight, n=1)
    torch.manual_seed(99)  # another global state must not decide anything
    resumed = module(root, True, crop="random", resize=24, batch_size=3)
    resumed.load_state_dict({"shuffle_seed": straight.state_dict()["shuffle_seed"], "batches_done": 2})
    assert_same_batches(list(resumed.train_dataloader()), first[2:])


def test_the_budget_decides_between_memory_and_the_files(tmp_path):
    """Automatic: a set whose decoded size (from the file headers) is over the budget streams; the held-out split
    gets what the training split left."""
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(8):
        picture(root / f"p{i}.png", i, (40, 30))  # resized to 32x24 (2304 bytes), at least 24x24 (1728 bytes)
    lower, exact = 8 * 1728 / 2**20, 8 * 2304 / 2**20
    between = module(root, None, crop="random", resize=24, preload_budget_mb=(lower + exact) / 2)
    between.train_dataloader()
    assert between.preloaded == {"train": None}  # the lower bound fits, the headers say it does not
    fits = module(root, None, crop="random", resize=24, preload_budget_mb=exact * 1.01)
    assert fits.preloaded == {}  # nothing is decoded before a loader is asked for
    fits.train_dataloader()
    assert fits.preloaded["train"].nbytes == 8 * 2304
    tiny = module(root, None, val_fraction=0.25, preload_budget_mb=6 * 768 / 2**20)  # centre crops: 768 bytes each
    tiny.train_dataloader(), tiny.val_dataloader()
    assert tiny.preloaded["train"] is not None and tiny.preloaded["val"] is None  # nothing left for 2 more
    forced = module(root, True, preload_budget_mb=0)
    forced.train_dataloader()
    assert forced.preloaded["train"] is not None
    with pytest.raises(ValueError, match="preload_budget_mb >= 0, got -1"):
        module(root, None, preload_budget_mb=-1)


def test_an_unreadable_file_is_named_when_preloading_and_left_out_as_when_streaming(tmp_path):
    root = tree(tmp_path / "pics", bad=2)
    dm = module(root, True, batch_size=7)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\) so far; the latest: .*bad1\.png"):
        loader = dm.train_dataloader()
    assert sorted(dm.preloaded["train"].missing) == [6, 7]  # b/bad0.png, b/bad1.png: sorted by path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once: reading the batches says nothing again
        batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 12 and sorted(Path(p).name for p in loader.skipped) == [
        "bad0.png",
        "bad1.png",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_batches(epochs(module(root, False, batch_size=7)), epochs(module(root, True, batch_size=7)))
    strict = module(root, True, on_corrupt="fail")
    with pytest.raises(ValueError, match=r"bad0\.png.*on_corrupt='skip'"):
        strict.train_dataloader()


def test_a_split_none_of_whose_files_can_be_read_is_refused_when_preloading(tmp_path):
    folder = tmp_path / "ilsvrc" / "train" / "n01440764"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"x{i}.JPEG").write_text("x\n")
    dm = ImageNetDataModule(str(tmp_path / "ilsvrc"), image_size=8, num_workers=0, preload=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UsageError, match=r"none of the 4 image files under .*ilsvrc could be read"):
            dm.train_dataloader()


@pytest.mark.parametrize("crop", ["center", "random"])
def test_two_ranks_read_disjoint_halves_and_resume_as_when_streaming(tmp_path, crop):
    """Under DDP Lightning shards the epoch's order with a DistributedSamplerWrapper: each rank holds every image and
    reads its half, as it would from the files, and a rank resumed mid-epoch reads the rest of its half."""
    root = tree(tmp_path / "pics")
    streamed, preloaded = module(root, False, crop=crop, resize=24), module(root, True, crop=crop, resize=24)
    preloaded.train_dataloader()
    decoded = preloaded.preloaded["train"]

    def rank(dataset, r: int, skip: int = 0) -> list[dict]:
        sampler = DistributedSamplerWrapper(EpochShuffle(len(dataset), seed=5), num_replicas=2, rank=r, shuffle=False)
        sampler.set_epoch(1)
        return list(ImageLoader(SeededItems(dataset), skip_batches=skip, sampler=sampler, batch_size=2))

    halves = []
    for r in (0, 1):
        mine = rank(decoded, r)
        assert_same_batches(mine, rank(streamed.train_set, r))
        assert_same_batches(rank(decoded, r, skip=1), mine[1:])
        halves.append({int(i) for batch in mine for i in batch["index"]})
    assert len(halves[0]) == len(halves[1]) == 6 and halves[0] | halves[1] == set(range(12))


@pytest.mark.parametrize(("before", "after", "done"), [(2, 1, 1), (1, 2, 2), (1, 3, 3), (3, 2, 1), (1, 2, 1)])
def test_a_resume_on_another_number_of_processes_continues_the_epoch(tmp_path, before, after, done):
    """``before`` processes each trained ``done`` batches of the epoch; ``after`` processes resume: together they read
    the rest of the epoch's order, no example twice, unless the batches done cannot be shared out evenly (then it
    warns, and fewer than a batch per process is read again)."""
    dm = module(tree(tmp_path / "pics"), True, batch_size=2)
    torch.manual_seed(3)
    first = dm.train_dataloader()

    def shard(loader: ImageLoader, rank: int, world: int) -> list[int]:
        sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=world, rank=rank, shuffle=False)
        sampler.set_epoch(1)
        again = ImageLoader(loader.dataset, skip_batches=loader.skip_batches, sampler=sampler, batch_size=2)
        return [int(i) for batch in again for i in batch["index"]]

    seen = [i for r in range(before) for i in shard(first, r, before)[: 2 * done]]
    dm.trainer = SimpleNamespace(world_size=after)
    state = {"shuffle_seed": first.sampler.seed, "batches_done": done, "world_size": before}
    if done * before % after:
        with pytest.warns(UserWarning, match=f"each skips {done * before // after}, so a few examples"):
            dm.load_state_dict(state)
    else:
        dm.load_state_dict(state)
    resumed = dm.train_dataloader()
    rest = [i for r in range(after) for i in shard(resumed, r, after)]
    assert sorted(set(seen + rest)) == list(range(12))
    again = 2 * (done * before % after)  # examples of the batches that could not be shared out
    assert len(seen + rest) == 12 + again and again < 2 * after


def test_a_checkpoint_after_a_resume_elsewhere_records_where_the_loader_is(tmp_path):
    """2 processes trained 1 batch each; 1 process resumed (skipping 2) and trained 3 more: it has read past 5 batches
    of the epoch, though Lightning counts 1 + 3 trained. The next epoch's count is Lightning's own again."""
    dm = module(tree(tmp_path / "pics"), True, batch_size=2)

    def trainer(processed: int, epoch: int) -> SimpleNamespace:
        progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        return SimpleNamespace(world_size=1, current_epoch=epoch, fit_loop=loop)

    dm.trainer = trainer(0, 0)
    dm.load_state_dict({"shuffle_seed": 5, "batches_done": 1, "world_size": 2, "epoch": 0})
    assert dm.train_dataloader().skip_batches == 2
    dm.trainer = trainer(4, 0)
    assert dm.state_dict() == {"shuffle_seed": 5, "batches_done": 5, "world_size": 1, "epoch": 0}
    dm.trainer = trainer(2, 1)
    assert dm.state_dict()["batches_done"] == 2


def test_occlusion_masks_come_with_preloaded_batches(tmp_path):
    root = tree(tmp_path / "pics")
    block = Occlusion("block", size=5)
    a = epochs(module(root, False, occlusion=block), n=1)
    b = epochs(module(root, True, occlusion=block), n=1)
    assert_same_batches(a, b)
    assert b[0]["mask"].shape == (4, 1, 16, 16) and int((b[0]["mask"][0] == 0).sum()) == 25


def test_in_memory_arrays_are_resized_cropped_and_scaled_a_batch_at_a_time_as_one_by_one():
    """Digits resized 8 -> 12 (bicubic) and scaled per image: each image of a batch is the image made by itself."""
    dm = DigitsDataModule(digits=[3], image_size=12, scaling="minmax", batch_size=16)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 1, 12, 12)
    for x, i, label in zip(batch["image"], batch["index"], batch["label"]):
        raw = dm.train_set.images[int(i)][None].float()
        alone = F.interpolate(raw, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
        assert torch.equal(x, to_unit_range(center_crop(alone, 12), "minmax")) and int(label) == 3
