"""Are an object model's samples new instances of the category, or copies of its training images?

    python bench/object_novelty.py CKPT [--n 36] [--out PNG]

For every sample of the checkpoint's model (its persistent chains, as ``predict`` draws them), the Pearson correlation
with its nearest training image (the largest over the training set, pixel against pixel, as aligned objects are
compared). A copy scores near 1. The yardsticks need no model: each held-out image against the training set (what a
new instance of the category scores), and each training image against the others. Writes a picture of the samples
beside their nearest training images (default: ``<run>/novelty.png``).
"""

import argparse
from pathlib import Path

import torch

from callbacks.images import save_png, stage_grid
from lightning_ebm.checkpoint_io import read_checkpoint
from lightning_ebm.errors import UsageError
from lightning_ebm.visualize import load_datamodule, load_model


def correlations(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every image of ``x (N, C, H, W)`` with every image of ``y (M, C, H, W)``: ``(N, M)``."""
    a, b = x.flatten(1), y.flatten(1)
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-8)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True).clamp_min(1e-8)
    return a @ b.T / (a.shape[1] - 1)


def stack(dataset) -> torch.Tensor:
    """Every image of a map-style image dataset, ``(N, C, H, W)``."""
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def summary(name: str, values: torch.Tensor) -> str:
    """A table row: the median, the range and the share above 0.95 of the nearest-image correlations."""
    v = values.sort().values
    return (
        f"| {name} | {len(v)} | {float(v.median()):.3f} | {float(v[0]):.3f} - {float(v[-1]):.3f} | "
        f"{int((v > 0.95).sum())} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--n", type=int, default=36, help="samples (each a different chain)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    try:
        model = load_model(args.ckpt).eval()
    except UsageError as err:
        parser.error(str(err).replace("--ckpt_path ", ""))
    data = load_datamodule(args.ckpt, "object_novelty.py needs the training images")
    name = type(data).__name__
    train = stack(data.train_set)
    held = stack(data.val_set) if data.val_set is not None else None
    with torch.no_grad():
        samples = model.sample(args.n).cpu()

    to_train = correlations(samples, train)
    nearest, which = to_train.max(1)
    others = correlations(train, train).fill_diagonal_(-1).max(1).values
    print(f"# {args.ckpt} (step {read_checkpoint(args.ckpt)['global_step']}): {name}, {len(train)} training images")
    print("\n| images | n | median nearest-training-image correlation | range | above 0.95 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(summary("samples", nearest))
    if held is not None:
        print(summary("held-out images (new instances)", correlations(held, train).max(1).values))
    print(summary("training images (against the others)", others))
    print("\nper sample:", " ".join(f"{c:.3f}" for c in nearest.tolist()))

    picture = stage_grid(
        {"samples": samples, "nearest training image": train[which]},
        separators=["|"],
        title=[f"{name}: samples and their nearest training images (median correlation {nearest.median():.2f})"],
    )
    out = args.out or args.ckpt.parent.parent / "novelty.png"
    print(f"\npicture: {save_png(picture, out)}")


if __name__ == "__main__":
    main()
