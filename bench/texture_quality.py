"""How close a trained texture model's samples are to the observed texture, and whether they are copies of it.

    python bench/texture_quality.py [CKPT] [--finish K] [--picture PNG]
                                          (default: the newest runs/texture/*/checkpoints/last.ckpt)

Prints SWD ×10³ over Laplacian-pyramid patches (lightning_ebm.metrics.swd) of the samples against the observed
image, next to the same score for references that need no model: other patches of the observed image itself (the
floor: the noise of the estimate), those patches lightly blurred (what a sampler that gets the structure but not the
finest detail would score), the other scikit-image textures, and the observed pixels shuffled (same histogram, no
structure). The samples are scored twice: as the chains give them (the last noisy Langevin iterate) and after K more
steps without noise (a noise-free finish: the nearest local mode of the model's density). The crops are
``TextureDataModule.reference_samples``, those that ``callbacks.SampleQuality`` scores as ``val/swd_floor`` during
training. It also prints, for each sample, the largest
normalised cross-correlation with the observed image over every window (and circular shift): 1.0 means the sample is
a copy of part of the observed image.
"""

import argparse
import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

import lightning_ebm.methods  # noqa: F401  (the classes checkpoints name)
from callbacks.images import save_png, stage_grid
from datamodules import TextureDataModule
from lightning_ebm.lightning_private import split_cli_hparams
from lightning_ebm.metrics import swd


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images (N, C, H, W)`` convolved with a Gaussian of ``sigma`` pixels (separable, reflected at the edges)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def best_match(sample: torch.Tensor, image: torch.Tensor) -> float:
    """The largest normalised cross-correlation of ``sample (C, h, w)`` with any ``h × w`` window of ``image``.

    An image of the sample's own size is tiled periodically first, so every circular shift counts as a window.
    """
    h, w = sample.shape[-2:]
    if image.shape[-2:] == sample.shape[-2:]:
        image = image.repeat(1, 2, 2)[:, : 2 * h - 1, : 2 * w - 1]
    s = (sample - sample.mean()) / sample.std()
    n = s.numel()
    ones = torch.ones_like(s)[None]
    mean = F.conv2d(image[None], ones) / n
    std = (F.conv2d(image[None] ** 2, ones) / n - mean**2).clamp_min(1e-12).sqrt()
    return float((F.conv2d(image[None], s[None]) / n / std).max())


def stride_power(images: torch.Tensor, stride: int) -> tuple[float, float]:
    """The share of ``images (N, C, H, W)``'s power (each image's mean removed) at the period ``stride`` pixels:
    at the horizontal frequencies ``k / stride`` (vertical stripes, k = 1 … stride − 1), and at the vertical ones.
    A strided first layer's input gradient carries a pattern of that period, which Langevin writes into samples."""
    h, w = (images.shape[-2] // stride) * stride, (images.shape[-1] // stride) * stride
    x = images[..., :h, :w]
    x = x - x.mean(dim=(-1, -2), keepdim=True)
    p = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1))
    p = p / p.sum()
    across = [k * w // stride for k in range(1, stride)]
    down = [k * h // stride for k in range(1, stride)]
    return float(p[0, across].sum()), float(p[down, 0].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", nargs="?", type=Path, default=None)
    parser.add_argument("--finish", type=int, default=30, help="noise-free Langevin steps of the second scoring")
    parser.add_argument("--picture", type=Path, default=None, help="write samples | observed crops as a PNG")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    ckpt = args.ckpt or max(Path("runs").glob("texture/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    checkpoint = torch.load(ckpt, weights_only=True, map_location="cpu")
    data = {k: v for k, v in checkpoint["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    observed = TextureDataModule(**data)
    module_name, class_name = split_cli_hparams(checkpoint["hyper_parameters"])[0].rsplit(".", 1)
    model = getattr(importlib.import_module(module_name), class_name).load_from_checkpoint(ckpt, map_location="cpu")
    n = min(4, model.chain_starts().shape[0]) if model.chain_starts() is not None else 4
    samples = model.sample(n)
    model.hparams.langevin_noise = False
    finished = (
        model.langevin(samples, n_steps=args.finish, rng=torch.Generator()).clamp(-1, 1) if args.finish else samples
    )
    g = torch.Generator().manual_seed(0)  # one generator for every set of crops: each set is new crops
    reference = observed.reference_samples(4, generator=g)  # crops of the samples' size, or the whole images
    kw = {"patches_per_image": 1024, "seed": 0}
    rows = [(f"samples ({n}), the chains' last iterate", swd(samples, reference, **kw))]
    if args.finish:
        rows.append((f"samples ({n}), after {args.finish} noise-free steps", swd(finished, reference, **kw)))
    others = observed.reference_samples(4, generator=g)
    rows.append(("other patches of the observed image (the floor)", swd(others, reference, **kw)))
    for sigma in (0.5, 0.75, 1.0):
        rows.append((f"other patches, blurred (Gaussian, {sigma} px)", swd(blur(others, sigma), reference, **kw)))
    for name in ("brick", "grass", "gravel"):
        if name != data["textures"]:
            size = {k: data[k] for k in ("image_size", "crop_size", "mode")}
            other = TextureDataModule(name, **size).reference_samples(4, generator=g)
            rows.append((f"the {name} texture", swd(other, reference, **kw)))
    shuffled = reference.flatten()[torch.randperm(reference.numel(), generator=g)].reshape(reference.shape)
    rows.append(("observed pixels, shuffled", swd(shuffled, reference, **kw)))
    print(
        f"# {ckpt} (step {checkpoint['global_step']}), observed: {data['textures']}, samples {tuple(samples.shape[1:])}"
    )
    print("\n| images | SWD x1e3 against the observed texture |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    corr = [max(best_match(s, image) for image in observed.images) for s in samples]
    print(
        "\nlargest correlation with any window of the observed image, per sample:", " ".join(f"{c:.3f}" for c in corr)
    )
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    stride = convs[0].stride[0] if convs else 1
    if stride > 1:
        crops = observed.reference_samples(16, generator=g)
        a, b = stride_power(samples, stride), stride_power(crops, stride)
        print(
            f"power at the first layer's stride period ({stride} px), samples over observed crops: "
            f"{a[0] / b[0]:.2f} in vertical stripes, {a[1] / b[1]:.2f} in horizontal ones"
        )
    if args.picture:
        stages = {"samples": samples, "observed crops": others[:n]}
        picture = stage_grid(
            stages, nrow=n, separators=["|"], title=[f"{data['textures']}, step {checkpoint['global_step']}"]
        )
        print(f"picture: {save_png(picture, args.picture)}")


if __name__ == "__main__":
    main()
