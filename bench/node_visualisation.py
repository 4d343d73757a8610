"""Generative visualisation of class nodes (Dai, Lu and Wu, ICLR 2015): which settings give class samples that a
judge other than the classifier itself recognises as their class?

    python bench/node_visualisation.py [--steps 600] [--per-class 10] [--out PNG]

Trains ``conf/experiments/generative_gradient_digits.yaml`` three ways for the same iterations (as shipped: half
generative, then discriminative; discriminative only; generative throughout), then samples every class node
``p_T(x | k) ∝ exp(f_k(x) / T) N(x; 0, σ² I)`` by exact HMC (``lightning_ebm.visualize``'s sampler) under a grid of
settings: σ, the temperature T, the HMC iterations, and the start (N(0, σ² I) noise, or the class's mean training
digit). With a ReLU classifier ``f_k`` is piecewise linear, so ``p_T`` is piecewise Gaussian with covariance σ² I
whatever T: T moves each piece's mean (by σ² ∂f_k/∂x / T) and only σ sets the pixel noise around it.
Each sample is judged twice: by the classifier itself (``class_scores``), and by a judge that never saw the
classifier, the majority of its 5 most correlated training digits (a sample must look like real digits of its class
to pass; the judge scores the held-out real digits as the yardstick). Writes the best setting's samples of each
classifier, one column per class (default ``bench/node_visualisation.png``).
"""

import argparse
import tempfile
from pathlib import Path

import torch
from budget import ROOT, train_for
from object_novelty import correlations

from callbacks.images import save_png, stage_grid
from datamodules import DigitsDataModule
from lightning_ebm.methods import GenerativeGradient
from lightning_ebm.samplers import hmc

RECIPE = ROOT / "conf" / "experiments" / "generative_gradient_digits.yaml"


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's training or held-out digits ``(N, 1, 16, 16)`` in [-1, 1] and their labels ``(N,)``."""
    data = DigitsDataModule(image_size=16, val_fraction=0.2)
    dataset = data.train_set if split == "train" else data.val_set
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([d["image"] for d in items]), torch.tensor([int(d["label"]) for d in items])


def judge(x: torch.Tensor, train: torch.Tensor, labels: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The majority label of each image's ``k`` most correlated training digits (Pearson, pixel against pixel)."""
    nearest = correlations(x, train).topk(k, dim=1).indices
    return labels[nearest].mode(dim=1).values


def class_samples(
    model: GenerativeGradient, per_class: int, sigma: float, temperature: float, steps: int, start: str, means
) -> torch.Tensor:
    """``per_class`` HMC samples of every class node, ``(10 * per_class, 1, 16, 16)``, class-major."""
    out = []
    for k in range(10):
        g = torch.Generator().manual_seed(k)
        shape = (per_class, 1, 16, 16)
        x0 = sigma * torch.randn(shape, generator=g) if start == "noise" else means[k].expand(shape).clone()
        f = lambda x, k=k: model.class_scores(x)[:, k] / temperature  # noqa: E731
        out.append(hmc(f, x0, n_steps=steps, step_size=0.05, leapfrog_steps=10, sigma=sigma, generator=g))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="training iterations of each classifier")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "node_visualisation.png")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    train, train_labels = digits("train")
    held, held_labels = digits("val")
    means = [train[train_labels == k].mean(0, keepdim=True) for k in range(10)]
    half = args.steps // 2
    schedules = {
        "as shipped (generative, then discriminative)": f"[[0, 1.0], [{half}, 1.0], [{half}, 0.0]]",
        "discriminative only": "[[0, 0.0]]",
        "generative throughout": "[[0, 1.0]]",
    }
    settings = [  # (σ, T, HMC iterations, start)
        (1.0, 1.0, 100, "noise"),  # the recipe's own
        (1.0, 1.0, 300, "noise"),
        (0.5, 1.0, 100, "noise"),
        (1.0, 0.3, 100, "noise"),
        (1.0, 0.1, 100, "noise"),
        (0.5, 0.1, 100, "noise"),
        (1.0, 1.0, 100, "mean"),
        (1.0, 0.3, 100, "mean"),
        (1.0, 0.1, 100, "mean"),
        (0.2, 0.04, 100, "noise"),  # σ² / T = 1: the mean moves as at σ = T = 1, the noise is 5x smaller
        (0.1, 0.01, 100, "noise"),
    ]
    n = 10 * args.per_class
    wanted = torch.arange(10).repeat_interleave(args.per_class)
    print(
        f"# scikit-learn digits 16x16; classifiers of {args.steps} iterations; {args.per_class} HMC samples per class "
        f"(10 leapfrog steps, step size adapted to acceptance 0.65 over the first half); torch {torch.__version__}"
    )
    yardstick = float((judge(held, train, train_labels) == held_labels).float().mean())
    print(f"\nthe judge (5 most correlated training digits) on the {len(held)} held-out real digits: {yardstick:.1%}")
    print(
        "\n| classifier | held-out accuracy | σ | T | HMC iterations | start | their class, by the classifier | "
        "their class, by the judge |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    best: dict[str, tuple[float, torch.Tensor, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, schedule) in enumerate(schedules.items()):
            extra = [f"--model.generative_schedule={schedule}", "--trainer.callbacks=[]"]
            extra += ["--trainer.check_val_every_n_epoch=1000"]
            ckpt, _, _ = train_for(RECIPE, f"c{i}", extra, None, Path(tmp), steps=args.steps)
            model = GenerativeGradient.load_from_checkpoint(ckpt, map_location="cpu").eval()
            for p in model.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                accuracy = float((model.class_scores(held).argmax(1) == held_labels).float().mean())
            for sigma, temperature, steps, start in settings:
                x = class_samples(model, args.per_class, sigma, temperature, steps, start, means)
                with torch.no_grad():
                    own = float((model.class_scores(x).argmax(1) == wanted).float().mean())
                judged = float((judge(x, train, train_labels) == wanted).float().mean())
                print(
                    f"| {name} | {accuracy:.1%} | {sigma:g} | {temperature:g} | {steps} | {start} | "
                    f"{own:.0%} of {n} | {judged:.0%} of {n} |"
                )
                label = f"sigma {sigma:g}, T {temperature:g}, {steps} it from {start}: judge {judged:.0%}"
                if name not in best or judged > best[name][0]:
                    best[name] = (judged, x, label)
    order = torch.arange(n).view(10, args.per_class).T.flatten()  # one column per class
    picture = stage_grid(
        {name: x[order].clamp(-1, 1) for name, (_, x, _) in best.items()},
        nrow=10,
        title=[f"{name}: {label}" for name, (_, _, label) in best.items()],
    )
    print(f"\npicture: {save_png(picture, args.out)}")


if __name__ == "__main__":
    main()
