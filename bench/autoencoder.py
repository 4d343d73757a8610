"""The descriptor as an auto-encoder (Xie et al., ICML 2016, §4): reconstructions under contrastive divergence and
under maximum likelihood, side by side with the observed images.

    python bench/autoencoder.py [--steps 300] [--out PNG]

With ReLU, the generative ConvNet's density is piecewise Gaussian, and the mean of the piece that an image x falls
in is ``reconstruct(x) = σ² ∂f/∂x``: the model is an auto-encoder whose code is the pattern of active ReLUs. Langevin
dynamics is driven by this reconstruction's error, and contrastive divergence, which starts its chains at observed
images, learns to make them fixed points (reconstructing them), where maximum likelihood learns to sample.

Trains ``conf/experiments/cd_texture.yaml`` (CD-10 from observed 48×48 crops of the brick texture) and the same
recipe with ``GenerativeConvNet`` (maximum likelihood, persistent chains from the zero image, 30 Langevin steps) for
the same iterations, then prints the per-pixel error of reconstructing held-out crops of the texture under each, next
to the untrained net's, and writes the picture observed | CD | ML (default: ``bench/autoencoder.png``).
"""

import argparse
import tempfile
from pathlib import Path

import torch
from budget import ROOT, train_for

from callbacks.images import save_png, stage_grid
from datamodules import TextureDataModule
from lightning_ebm.checkpoint_io import read_checkpoint
from lightning_ebm.lightning_private import split_cli_hparams
from lightning_ebm.visualize import load_model

RECIPE = ROOT / "conf" / "experiments" / "cd_texture.yaml"
ML = ["--model.class_path=lightning_ebm.methods.GenerativeConvNet", "--model.init_args.langevin_steps=30"]


def errors(reconstruction: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    """``(mean squared error per pixel, the same over the images' own variance)``: 1 on the second scale is what
    reconstructing every image by its own mean grey would score."""
    mse = float((reconstruction - x).pow(2).mean())
    return mse, mse / float(x.var(dim=(1, 2, 3)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training iterations of each model")
    parser.add_argument("--n", type=int, default=8, help="observed crops to reconstruct")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "autoencoder.png")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "CD": train_for(RECIPE, "cd", [], None, Path(tmp), steps=args.steps),
            "ML": train_for(RECIPE, "ml", ML, None, Path(tmp), steps=args.steps),
        }
        models = {name: load_model(ckpt).eval() for name, (ckpt, _, _) in runs.items()}
        _, data_args = split_cli_hparams(read_checkpoint(runs["CD"][0])["datamodule_hyper_parameters"])
    data = TextureDataModule(**data_args)
    # crops the models never saw as such (random crops of the same image: the texture, not these pixels)
    x = data.reference_samples(args.n, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    untrained = type(models["ML"])(**models["ML"].hparams)
    reconstructions = {name: model.reconstruct(x) for name, model in models.items()}

    print(
        f"# brick texture, {args.n} random {tuple(x.shape[1:])} crops in [-1, 1]; {args.steps} iterations each; "
        f"torch {torch.__version__}"
    )
    print("\n| model | training | per-pixel squared error | / the crops' variance |\n| --- | ---: | ---: | ---: |")
    for name, (_, seconds, steps) in runs.items():
        mse, relative = errors(reconstructions[name], x)
        print(f"| {name} ({type(models[name]).__name__}) | {steps} it, {seconds:.0f} s | {mse:.4f} | {relative:.3f} |")
    mse, relative = errors(untrained.reconstruct(x), x)
    print(f"| untrained net | - | {mse:.4f} | {relative:.3f} |")

    picture = stage_grid(
        {"observed": x, "CD: reconstruct(x)": reconstructions["CD"], "ML: reconstruct(x)": reconstructions["ML"]},
        nrow=2,
        separators=["|", "|"],
        title=["reconstruct(x) = sigma^2 df/dx, the mean of the Gaussian piece x falls in"],
    )
    print(f"\npicture: {save_png(picture, args.out)}")


if __name__ == "__main__":
    main()
