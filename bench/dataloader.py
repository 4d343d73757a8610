"""Images per second of the ImageNet DataModule's loader, streamed from the files (per worker) and preloaded into
memory, against a plain Pillow Dataset.

    python bench/dataloader.py [--images 512] [--image-size 64] [--workers 0 1 2] [--crop random --resize 80]

It writes ImageNet-like JPEG files (500×375 crops of scikit-image's photographs, quality 90) into
``train/<wnid>/`` folders of a temporary root, then times one pass of ``ImageNetDataModule.train_dataloader()``
on the same files two ways: streaming (``preload=False``: lazy decoding in workers, JPEG draft decoding, resize,
crop, scaling, every epoch) and preloaded (``preload=True``: the files decoded once into a uint8 tensor by the
workers, then batches cut, converted and scaled from memory in the main process; the time of that one decoding is
its own column). The baseline is a plain Dataset that opens, converts, resizes and crops each file with Pillow in
the usual way, with the streaming loader's DataLoader settings.
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules import ImageNetDataModule
from datamodules.textures import shipped_images

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field")


def write_tree(root: Path, n: int, classes: int = 8) -> None:
    """``n`` JPEG files of 500×375 in ``classes`` folders, cut from the shipped photographs."""
    rng = np.random.default_rng(0)
    sources = [Image.open(shipped_images()[name]).convert("RGB") for name in PHOTOS]
    for i in range(n):
        src = sources[i % len(sources)]
        scale = max(500 / src.width, 375 / src.height) * rng.uniform(1.0, 1.5)
        big = src.resize((round(src.width * scale) + 1, round(src.height * scale) + 1), Image.Resampling.BICUBIC)
        left, top = rng.integers(0, big.width - 500), rng.integers(0, big.height - 375)
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        big.crop((left, top, left + 500, top + 375)).save(folder / f"img_{i:06d}.JPEG", quality=90)


class PlainFiles(Dataset):
    """The baseline: Pillow open, convert, resize the shorter side, centre crop, to a [-1, 1] tensor."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            scale = self.size / min(im.size)
            im = im.resize(
                (max(self.size, round(im.width * scale)), max(self.size, round(im.height * scale))),
                Image.Resampling.BICUBIC,
            )
            left, top = (im.width - self.size) // 2, (im.height - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def images_per_second(loader) -> float:
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["image"] if isinstance(batch, dict) else batch)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--crop", choices=["center", "random"], default="center")
    parser.add_argument("--resize", type=int, default=None, help="shorter side before cropping (default: the size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.images)
        crop = f"{args.crop} crop" + (f" of the shorter side resized to {args.resize}" if args.resize else "")
        print(
            f"# {args.images} JPEG files of 500x375 -> {args.image_size}x{args.image_size} ({crop}), "
            f"batch {args.batch_size}"
        )
        print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads\n")
        print(
            "| workers | streamed img/s | per worker | preloaded img/s | decoding once, s | plain Pillow img/s "
            "| streamed / Pillow | preloaded / streamed |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        options = dict(image_size=args.image_size, resize=args.resize, crop=args.crop, batch_size=args.batch_size)
        for workers in args.workers:
            dm = ImageNetDataModule(str(root), num_workers=workers, preload=False, **options)
            start = time.perf_counter()
            memory = ImageNetDataModule(str(root), num_workers=workers, preload=True, **options).train_dataloader()
            decoding = time.perf_counter() - start
            plain = DataLoader(
                PlainFiles([dm.train_set.path(i) for i in range(len(dm.train_set))], args.image_size),
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            ours, base = dm.train_dataloader(), plain
            for loader in (ours, base, memory):  # warm the page cache and start the workers
                images_per_second(loader)
            rate_ours, rate_base, rate_memory = (images_per_second(loader) for loader in (ours, base, memory))
            print(
                f"| {workers} | {rate_ours:.0f} | {rate_ours / max(workers, 1):.0f} | {rate_memory:.0f} | "
                f"{decoding:.2f} | {rate_base:.0f} | {rate_ours / rate_base:.2f} | {rate_memory / rate_ours:.1f} |"
            )


if __name__ == "__main__":
    main()
