"""Does generative-gradient pre-training change a classifier's test accuracy? Same budget, several seeds.

    python bench/generative_gradient.py [--steps 200] [--pretrain 100] [--seeds 5]

Dai, Lu and Wu (ICLR 2015) pre-train a classification ConvNet with the generative gradient and then train it
discriminatively. ``conf/experiments/generative_gradient_digits.yaml`` (scikit-learn's digits at 16×16, a fifth held
out) is trained for ``--steps`` iterations either discriminatively throughout or with the first ``--pretrain`` of them
generative, once per seed (the seed sets the initial weights and the batch order); the table gives the held-out
accuracy, mean ± standard deviation over the seeds, and the held-out cross-entropy.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from budget import ROOT, train_for

from datamodules import DigitsDataModule
from lightning_ebm.methods import GenerativeGradient

RECIPE = ROOT / "conf" / "experiments" / "generative_gradient_digits.yaml"


def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's held-out digits and their labels."""
    data = DigitsDataModule(image_size=16, val_fraction=0.2)
    items = [data.val_set[i] for i in range(len(data.val_set))]
    return torch.stack([d["image"] for d in items]), torch.tensor([int(d["label"]) for d in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pretrain", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    x, y = held_out()
    schedules = {
        "discriminative only": "[[0, 0.0]]",
        f"generative for {args.pretrain} steps, then discriminative": (
            f"[[0, 1.0], [{args.pretrain}, 1.0], [{args.pretrain}, 0.0]]"
        ),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in schedules}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for k, (name, schedule) in enumerate(schedules.items()):
                extra = [f"--seed_everything={seed}", f"--model.generative_schedule={schedule}"]
                extra += ["--trainer.callbacks=[]", "--trainer.check_val_every_n_epoch=1000"]
                ckpt, _, _ = train_for(RECIPE, f"s{seed}-{k}", extra, None, Path(tmp), steps=args.steps)
                model = GenerativeGradient.load_from_checkpoint(ckpt, map_location="cpu").eval()
                with torch.no_grad():
                    scores = model.class_scores(x)
                accuracy = (scores.argmax(1) == y).float().mean().item()
                results[name].append((accuracy, F.cross_entropy(scores, y).item()))
    print(
        f"# scikit-learn digits 16x16, {len(y)} held out; {args.steps} iterations of batch 64 each; seeds 0-"
        f"{args.seeds - 1}; torch {torch.__version__}"
    )
    print("\n| training | held-out accuracy (%) | held-out cross-entropy |\n| --- | ---: | ---: |")
    for name, runs in results.items():
        acc = [100 * a for a, _ in runs]
        ce = [c for _, c in runs]
        print(
            f"| {name} | {statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f} | "
            f"{statistics.mean(ce):.3f} ± {statistics.stdev(ce):.3f} |"
        )
    print("\nper seed (accuracy %):")
    for name, runs in results.items():
        print(f"  {name}: " + " ".join(f"{100 * a:.2f}" for a, _ in runs))


if __name__ == "__main__":
    main()
