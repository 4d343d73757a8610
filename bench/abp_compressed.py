"""Alternating back-propagation from compressed faces: how well faces seen only as ``y = A x`` are recovered.

    python bench/abp_compressed.py [--steps 500] [--eval-steps 300]

Learning from indirect data (Han et al., AAAI 2017): ``conf/experiments/abp_compressed.yaml`` learns the generator
from ``y = A x`` alone, ``A`` a fixed Gaussian projection of the 32×32 faces to a quarter as many numbers. The table
gives the mean squared error per pixel of recovering the faces from their ``y``: ABP by ``g(z)`` (the training faces'
own latents, and for all faces latents inferred by ``--eval-steps`` of gradient descent on ``y``), against the
answers that need no learned model (the minimum-norm solution ``A⁺ y``; the mean face, which already needs the whole
training faces) and PCA with the generator's latent dimension fitted on the whole faces, which ABP never sees.
"""

import torch
from abp_vs_pca import pca_errors, train_on_faces
from budget import ROOT

RECIPE = ROOT / "conf" / "experiments" / "abp_compressed.yaml"


def main() -> None:
    args, train, held, (model, wall, steps) = train_on_faces(__doc__, RECIPE, 500)
    a = model.observation.matrix
    abp = [float(model.evaluate(x)["recon_error"]) for x in (train, held)]
    with torch.no_grad():
        own = float((model.generate(model.latents.get(torch.arange(len(train)))) - train).pow(2).mean())

    def min_norm(x: torch.Tensor) -> float:
        y = model.observe(x)
        return float((torch.linalg.lstsq(a, y.T).solution.T.reshape(x.shape) - x).pow(2).mean())

    mean = train.mean(0)
    d = model.generator.latent_shape[0]
    pca = pca_errors(train, held, d)
    print(
        f"# LFW faces 32x32 ({len(train)} training, {len(held)} held out) seen as {a.shape[0]} random projections "
        f"of their {a.shape[1]} pixels; latent dimension {d}; ABP {steps} iterations in {wall:.0f} s; "
        f"torch {torch.__version__}"
    )
    print("\n| recovery of x from y = A x | training faces | held-out faces |\n| --- | ---: | ---: |")
    print(f"| ABP, the training faces' own latents | {own:.4f} | |")
    print(f"| ABP, z inferred from y by {args.eval_steps} gradient steps | {abp[0]:.4f} | {abp[1]:.4f} |")
    print(f"| minimum-norm A⁺y (no model) | {min_norm(train):.4f} | {min_norm(held):.4f} |")
    print(
        f"| the mean training face (ignores y) | {float((train - mean).pow(2).mean()):.4f} | "
        f"{float((held - mean).pow(2).mean()):.4f} |"
    )
    whole = "fitted on the whole faces (not available to ABP)"
    print(f"| PCA with {d} components, {whole} | {pca[0]:.4f} | {pca[1]:.4f} |")


if __name__ == "__main__":
    main()
