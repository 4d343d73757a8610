"""Full-size ImageNet without the data: how long ``ImageNetDataModule`` takes to index the 1.28 M training files, how
much memory the index holds in each process, and how long each of 8 ranks waits for its first batch.

    python bench/imagenet_index.py [--sizes 10000 100000 1281167] [--classes 1000] [--ranks 8] [--root DIR]

For each size it builds an ILSVRC-layout tree, ``train/<wnid>/<wnid>_<k>.JPEG`` in ``--classes`` folders, each
folder's files hard links to one JPEG of 500×375 (ImageNet's typical size): every file is a real image, and a million
of them cost directory entries, not disk. Then, in a fresh process per rank (as on a node with 8 GPUs, each process a
rank), it times:

- ``index``: constructing ``ImageNetDataModule(root)``: listing the class folders and building the file index;
- ``index MB``: the memory that the index holds once built, and the peak while building it (Python's tracemalloc,
  which counts numpy's arrays too), and the process's resident memory after;
- ``first batch``: from the constructor's return to this rank's first training batch of 64 images at 64×64, through
  ``train_dataloader()`` and the DistributedSamplerWrapper that Lightning puts in front of it for 8 ranks: each rank
  reads only its shard of the epoch's order. The files are streamed (``preload=False``), which is what the default
  chooses for the whole training set: 1.28 M images need at least 15 GB decoded at 64×64, over the 2 GB
  ``preload_budget_mb``. (A set that fits the budget is decoded into memory first, by every rank, before its first
  batch: about a minute per 50,000 files on one core here.)

The ranks run one after another (the listing is then in the page cache, as it is on a node after the first rank), and
then all at once (``--together``) for the wall time of a node starting 8 ranks on this machine's cores.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ILSVRC_TRAIN = 1_281_167


def build_tree(root: Path, n: int, classes: int) -> float:
    """``n`` files in ``classes`` folders under ``root/train``, each folder's files hard links to one JPEG of its own
    (ext4 allows 65,000 links to a file); the seconds it took."""
    start = time.perf_counter()
    yy, xx = np.mgrid[:375, :500]
    for c in range(classes):
        wnid = f"n{c:08d}"
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        source = folder / f"{wnid}_{c}.JPEG"
        pixels = np.stack([(xx + c) % 256, (yy * 2 + c) % 256, (xx + yy) % 256], -1).astype(np.uint8)
        Image.fromarray(pixels).save(source, quality=90)
        for k in range(c + classes, n, classes):
            os.link(source, folder / f"{wnid}_{k}.JPEG")
    return time.perf_counter() - start


RANK = r"""
import gc, json, sys, time, tracemalloc
from pathlib import Path
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from datamodules import ImageNetDataModule
from datamodules.loading import ImageLoader

root, rank, ranks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

before = rss_mb()
tracemalloc.start()
start = time.perf_counter()
dm = ImageNetDataModule(root, image_size=64, batch_size=64, num_workers=0, preload=False)
index_s = time.perf_counter() - start
gc.collect()
held, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
after = rss_mb()
start = time.perf_counter()
loader = dm.train_dataloader()
sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=ranks, rank=rank, shuffle=False)
sampler.set_epoch(0)
batch = next(iter(ImageLoader(loader.dataset, sampler=sampler, batch_size=64)))
first_s = time.perf_counter() - start
print(json.dumps({"files": len(dm.train_set), "index_s": index_s, "held_mb": held / 2**20, "peak_mb": peak / 2**20,
                  "rss_mb": after, "rss_delta_mb": after - before, "first_batch_s": first_s,
                  "batch": list(batch["image"].shape), "first_index": int(batch["index"][0])}))
"""


def span(results: list[dict], key: str, digits: int) -> str:
    """``min–max`` of ``key`` over the ranks."""
    values = [r[key] for r in results]
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def rank_command(root: Path, rank: int, ranks: int) -> list[str]:
    return [sys.executable, "-c", RANK, str(root), str(rank), str(ranks)]


def run_ranks(root: Path, ranks: int) -> list[dict]:
    """Each rank in its own process, one after another."""
    here = Path(__file__).resolve().parents[1]
    results = []
    for rank in range(ranks):
        out = subprocess.run(rank_command(root, rank, ranks), cwd=here, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def run_together(root: Path, ranks: int) -> float:
    """All ranks at once; the wall time until the last has its first batch."""
    here = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    procs = [subprocess.Popen(rank_command(root, r, ranks), cwd=here, stdout=subprocess.PIPE) for r in range(ranks)]
    for p in procs:
        p.communicate()
        assert p.returncode == 0
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, ILSVRC_TRAIN])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--root", type=Path, default=None, help="where to build the trees (default: a temp folder)")
    parser.add_argument("--together", action="store_true", help="also start all ranks at once")
    args = parser.parse_args()

    about = f"# {args.classes} class folders, {args.ranks} ranks one after another, batch 64 at 64x64, streamed; "
    about += f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; min-max over the ranks"
    header = "| files | build the tree | index (s) | index held / peak (MB) | process RSS (MB) | first batch (s) |"
    rows = [about, "", header, "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    if args.together:
        rows[2] += f" {args.ranks} ranks at once (s) |"
        rows[3] += " ---: |"
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        for n in args.sizes:
            root = Path(tmp) / f"ilsvrc-{n}"
            root.mkdir()
            built = build_tree(root, n, args.classes)
            results = run_ranks(root, args.ranks)
            assert all(r["files"] == n for r in results)
            assert len({r["first_index"] for r in results}) == args.ranks  # each rank its own shard

            held = f"{span(results, 'held_mb', 1)} / {span(results, 'peak_mb', 1)}"
            row = f"| {n:,} | {built:.0f} s | {span(results, 'index_s', 2)} | {held} | {span(results, 'rss_mb', 0)} | "
            row += f"{span(results, 'first_batch_s', 2)} |"
            if args.together:
                row += f" {run_together(root, args.ranks):.1f} |"
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
