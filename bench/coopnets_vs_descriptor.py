"""CoopNets against the descriptor alone on the same data and the same wall-clock budget, scored by SWD.

    python bench/coopnets_vs_descriptor.py [--seconds 120]

Both learn the 16×16 digits of ``conf/experiments/coopnets_digits.yaml`` (half of scikit-learn's digits; the other
half is held out) through the CLI, for the same number of seconds (``--trainer.max_time``):

- CoopNets, the recipe as it is;
- the descriptor alone: ``GenerativeConvNet`` (maximum likelihood with 64 persistent chains started from uniform
  noise) with the same descriptor net, Langevin settings and optimiser.

Each model then draws as many samples as there are held-out digits; the table gives their SWD ×10³ against the
held-out half, next to the training half (the floor: the distance between two halves of the data) and uniform noise.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from budget import ROOT, digit_halves, print_swd_table, train_for

from callbacks.images import make_grid, save_png, to_uint8
from lightning_ebm.methods import CoopNets, GenerativeConvNet
from lightning_ebm.metrics import swd

RECIPE = ROOT / "conf" / "experiments" / "coopnets_digits.yaml"
DESCRIPTOR_ALONE = [
    "--model=lightning_ebm.methods.GenerativeConvNet",
    "--model.net=lightning_ebm.nets.ObjectDescriptor",
    "--model.net.channels=[64, 128]",
    "--model.net.kernel_sizes=[4, 4]",
    "--model.net.strides=[2, 2]",
    "--model.net.n_out=100",
    "--model.n_chains=64",
    "--model.chain_init=uniform",
    "--model.sample_steps=10",
    "--model.langevin_steps=15",
    "--model.langevin_step_size=0.005",
    "--model.langevin_sigma=0.016",
    "--model.optimizer=torch.optim.Adam",
    "--model.optimizer.lr=0.007",
    "--model.optimizer.betas=[0.5, 0.999]",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--grids", type=Path, default=None, help="also write each model's first 64 samples here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    held, train_half = digit_halves()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls, extra in (("CoopNets", CoopNets, []), ("descriptor alone", GenerativeConvNet, DESCRIPTOR_ALONE)):
            ckpt, wall, steps = train_for(RECIPE, name.replace(" ", "_"), extra, args.seconds, Path(tmp))
            model = cls.load_from_checkpoint(ckpt, map_location="cpu")
            samples = model.sample(len(held), rng=torch.Generator().manual_seed(0))
            if args.grids is not None:
                save_png(make_grid(to_uint8(samples[:64]), nrow=8), args.grids / f"{name.replace(' ', '_')}.png")
            rows.append((f"{name} ({steps} iterations, {wall:.0f} s with start-up)", swd(samples, held)))
    rows.append(("the training half of the digits (the floor)", swd(train_half, held)))
    rows.append(("uniform noise", swd(torch.rand_like(held) * 2 - 1, held)))
    print_swd_table(rows, len(held), args.seconds)


if __name__ == "__main__":
    main()
