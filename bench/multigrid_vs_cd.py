"""Multi-grid minimal CD against CD and persistent CD: same data, same wall-clock budget, SWD against held-out data.

    python bench/multigrid_vs_cd.py [--seconds 120] [--grids DIR]

All three learn the 16×16 digits of ``conf/experiments/multigrid_digits.yaml`` (half of scikit-learn's digits; the
other half is held out) through the CLI for the same number of seconds (``--trainer.max_time``), with the same
16×16 descriptor (the recipe's finest grid), Langevin settings and optimiser:

- multi-grid MCD: the recipe as it is (30 Langevin steps at 4×4, then 30 at 16×16, from each digit's 1×1 mean);
- CD: ``ContrastiveDivergence``, 30 Langevin steps (CD-30) from the observed batch;
- persistent CD: the same with 64 persistent chains.

The paper's claim (Gao et al., CVPR 2018) is about learning a model that synthesizes images from the minimal 1×1
start. So every model draws its samples from the same starts, the 1×1 means of training digits: multi-grid MCD
through its grids, CD and PCD by 60 Langevin steps of their 16×16 descriptor from the flat images (the same number
of steps the multi-grid sampler takes). PCD is also scored on its own sampler (its persistent chains). Samples are
drawn in batches of 64, the training batch, because batch normalisation makes f depend on the batch.
"""

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch
from budget import ROOT, digit_halves, print_swd_table, train_for

from callbacks.images import make_grid, save_png, to_uint8
from lightning_ebm.methods import ContrastiveDivergence, MultigridMCD
from lightning_ebm.metrics import swd

RECIPE = ROOT / "conf" / "experiments" / "multigrid_digits.yaml"
CD = [
    "--model=lightning_ebm.methods.ContrastiveDivergence",
    "--model.net=lightning_ebm.nets.MultigridDescriptor",
    "--model.net.width=0.25",
    "--model.langevin_steps=30",
    "--model.langevin_step_size=0.00235",
    "--model.langevin_sigma=0.392",
    "--model.optimizer=torch.optim.Adam",
    "--model.optimizer.lr=0.3",
    "--model.optimizer.betas=[0.5, 0.999]",
]
PCD = [*CD, "--model.persistent=true", "--model.n_chains=64"]
BATCH = 64


def in_batches(draw, starts: torch.Tensor) -> torch.Tensor:
    """``draw(start_batch, rng)`` over ``starts`` in batches of the training batch size, concatenated."""
    return torch.cat([draw(s, torch.Generator().manual_seed(i)) for i, s in enumerate(starts.split(BATCH))])


def multigrid(model: MultigridMCD, start: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """The multi-grid sampler from the 1×1 ``start``."""
    return model.sample(len(start), start=start, rng=rng)


def from_flat(model: ContrastiveDivergence, start: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Langevin of a 16×16 descriptor from the flat image of ``start``, as many steps as the multi-grid sampler."""
    steps = 2 * model.hparams.langevin_steps
    return model.langevin(start.expand(-1, -1, 16, 16), n_steps=steps, rng=rng).clamp(-1, 1)


def own_chains(model: ContrastiveDivergence, start: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """PCD's own sampler: its persistent chains continued."""
    return model.sample(len(start), rng=rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--grids", type=Path, default=None, help="also write each model's first 64 samples here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    held, train_half = digit_halves()
    flat = train_half.mean((2, 3), keepdim=True)  # the 1x1 starts: means of training digits
    rows, samples = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("multi-grid MCD", []), ("CD-30", CD), ("persistent CD-30", PCD)):
            ckpt, wall, steps = train_for(RECIPE, name.replace(" ", "_"), extra, args.seconds, Path(tmp))
            label = f"{name} ({steps} iterations in {wall:.0f} s with start-up)"
            if name == "multi-grid MCD":
                model = MultigridMCD.load_from_checkpoint(ckpt, map_location="cpu")
                samples[name] = in_batches(partial(multigrid, model), flat)
            else:
                model = ContrastiveDivergence.load_from_checkpoint(ckpt, map_location="cpu")
                samples[name] = in_batches(partial(from_flat, model), flat)
            rows.append((f"{label}, from the 1x1 starts", swd(samples[name], held)))
            if name == "persistent CD-30":
                own = in_batches(partial(own_chains, model), flat)
                rows.append((f"{label}, its persistent chains", swd(own, held)))
    rows.append(("the 1x1 starts themselves (flat images)", swd(flat.expand(-1, -1, 16, 16), held)))
    rows.append(("the training half of the digits (the floor)", swd(train_half, held)))
    rows.append(("uniform noise", swd(torch.rand_like(held) * 2 - 1, held)))
    if args.grids is not None:
        for name, x in samples.items():
            save_png(make_grid(to_uint8(x[:64]), nrow=8), args.grids / f"{name.replace(' ', '_')}.png")
    print_swd_table(rows, len(held), args.seconds)


if __name__ == "__main__":
    main()
