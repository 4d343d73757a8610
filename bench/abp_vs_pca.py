"""Alternating back-propagation against PCA with the same latent dimension: reconstruction error on the same faces.

    python bench/abp_vs_pca.py [--steps 600] [--eval-steps 300]

The paper's comparison (Han et al., AAAI 2017, §5): a generator learned by ABP is a non-linear factor analysis,
PCA the linear one. Both get the 90 training faces of ``conf/experiments/abp_faces.yaml`` (scikit-image's LFW subset
at 32×32, per-image min-max to [-1, 1]) and the same latent dimension; the table gives the mean squared error per
pixel of reconstructing the training faces and the 10 held-out ones. ABP reconstructs a face from the latent vector it
kept for it in training, or by inferring one (``--eval-steps`` of gradient descent on ‖x − g(z)‖²/(2s²) + ‖z‖²/2 from
a draw of N(0, I)); PCA projects it on its first d components.
"""

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from budget import ROOT, train_for

from datamodules import LFWDataModule
from lightning_ebm.methods import AlternatingBackprop

RECIPE = ROOT / "conf" / "experiments" / "abp_faces.yaml"


def pca_errors(train: torch.Tensor, held: torch.Tensor, d: int) -> tuple[float, float]:
    """Mean squared error per pixel of the rank-``d`` PCA reconstruction (fitted on ``train``) of both sets."""
    a, b = train.flatten(1), held.flatten(1)
    mean = a.mean(0)
    _, _, v = torch.linalg.svd(a - mean, full_matrices=False)
    basis = v[:d]

    def error(x: torch.Tensor) -> float:
        return float(((x - mean) @ basis.T @ basis + mean - x).pow(2).mean())

    return error(a), error(b)


def train_on_faces(doc: str, recipe: Path, steps: int) -> tuple[argparse.Namespace, torch.Tensor, torch.Tensor, Any]:
    """Parse ``--steps``/``--eval-steps``, load the recipe's 32×32 LFW faces (training and held out), fit the recipe
    and return the arguments, both sets and ``(model, wall seconds, iterations)``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    data = LFWDataModule(image_size=32, scaling="minmax")
    train = torch.stack([data.train_set[i]["image"] for i in range(len(data.train_set))])
    held = torch.stack([data.val_set[i]["image"] for i in range(len(data.val_set))])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, wall, iterations = train_for(recipe, recipe.stem, [], None, Path(tmp), steps=args.steps)
        model = AlternatingBackprop.load_from_checkpoint(ckpt, map_location="cpu")
    model.hparams.eval_steps = args.eval_steps
    return args, train, held, (model, wall, iterations)


def main() -> None:
    args, train, held, (model, wall, steps) = train_on_faces(__doc__, RECIPE, 600)
    d = model.generator.latent_shape[0]
    abp = [float(model.evaluate(x)["recon_error"]) for x in (train, held)]
    with torch.no_grad():
        kept = model.generate(model.latents.get(torch.arange(len(train))))
    own = float((kept - train).pow(2).mean())
    pca = pca_errors(train, held, d)
    print(
        f"# LFW faces 32x32 ({len(train)} training, {len(held)} held out); latent dimension {d}; ABP {steps} "
        f"iterations in {wall:.0f} s; torch {torch.__version__}"
    )
    print("\n| method | training faces | held-out faces |\n| --- | ---: | ---: |")
    print(f"| ABP, the training faces' own latents (Langevin, warm-started every epoch) | {own:.4f} | |")
    print(f"| ABP, z inferred by {args.eval_steps} gradient steps from N(0, I) | {abp[0]:.4f} | {abp[1]:.4f} |")
    print(f"| PCA, {d} components | {pca[0]:.4f} | {pca[1]:.4f} |")
    print(
        f"| the mean face | {float((train - train.mean(0)).pow(2).mean()):.4f} | "
        f"{float((held - train.mean(0)).pow(2).mean()):.4f} |"
    )


if __name__ == "__main__":
    main()
