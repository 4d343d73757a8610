"""Profile of training iterations through the framework: where the time of an iteration goes, operator by operator.

    python bench/profile_iteration.py                       # CoopNets at the issue's size (below), 3 iterations
    python bench/profile_iteration.py --steps 5 --rows 25

The run is the real command line (``lightning-ebm fit``) of ``conf/experiments/coopnets_cifar_paper.yaml`` at the
size of the CoopNets row of the whole-iteration table: 32×32 RGB images from a folder of PNGs, batch 100, 144 chains,
10 noise-free Langevin steps, the recipe's callbacks. After ``--warmup`` iterations, ``torch.profiler`` records
``--steps`` iterations; the table printed is its operators sorted by their own CPU time, and a count per iteration of
the calls that show whether work is done twice: generator forwards (``aten::convolution`` of transposed
convolutions), backward passes, optimiser steps and host synchronisations (``aten::item``, ``aten::is_nonzero``,
``aten::_local_scalar_dense``).
"""

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback
from PIL import Image

from lightning_ebm.__main__ import cli_main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "conf/experiments/coopnets_cifar_paper.yaml"
SIZE = [
    "--data=ImageFolderDataModule",
    "--data.image_size=32",
    "--data.batch_size=100",
    "--data.num_workers=0",
    "--data.val_fraction=0",
    "--model.n_chains=144",
    "--model.langevin_noise=false",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    "--checkpoint.every_n_train_steps=0",
]
SYNCS = ("aten::item", "aten::is_nonzero", "aten::_local_scalar_dense")
MADE: list["Profile"] = []  # the profiler callback the CLI built, for main() to read


class Profile(Callback):
    """Record iterations ``warmup`` … ``warmup + steps − 1`` with ``torch.profiler``."""

    def __init__(self, warmup: int = 2, steps: int = 3) -> None:
        self.warmup, self.steps = warmup, steps
        self.profiler: torch.profiler.profile | None = None
        MADE.append(self)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.profiler is not None and trainer.global_step == self.warmup + self.steps:
            self.profiler.__exit__(None, None, None)
            trainer.should_stop = True


def image_folder(folder: Path, n: int = 300) -> None:
    """``n`` random 32×32 RGB PNGs in ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def counts(events, steps: int) -> dict[str, float]:
    """Calls per iteration of the operators that show repeated work."""
    calls = Counter()
    for e in events:
        calls[e.key] += e.count
    per = lambda *keys: sum(calls[k] for k in keys) / steps  # noqa: E731
    return {
        "transposed convolutions (generator layers × forwards)": per("aten::conv_transpose2d"),
        "convolutions, forward (descriptor and generator)": per("aten::convolution"),
        "autograd backward passes": per("autograd::engine::evaluate_function: ConvolutionBackward0"),
        "optimiser steps": per("Optimizer.step#Adam.step"),
        "host synchronisations": per(*SYNCS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        image_folder(Path(tmp) / "images")
        status = _fit(tmp, args.warmup, args.steps)
        if status != 0 or not MADE or MADE[-1].profiler is None:
            sys.exit(f"the profiled run failed (exit status {status})")
    events = MADE[-1].profiler.key_averages()
    print(f"# CoopNets iteration, {' '.join(SIZE[1:6])}; {args.steps} iterations after {args.warmup}\n")
    for name, value in counts(events, args.steps).items():
        print(f"- {name} per iteration: {value:g}")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


def _fit(tmp: str, warmup: int, steps: int) -> int:
    """The recipe's fit in this process, with the profiler callback appended."""
    argv = ["fit", "--config", str(RECIPE), *SIZE, f"--data.root={tmp}/images"]
    argv += [f"--trainer.max_steps={warmup + steps + 1}", f"--trainer.default_root_dir={tmp}/runs"]
    argv += ["--trainer.callbacks+=__main__.Profile", f"--trainer.callbacks.warmup={warmup}"]
    argv += [f"--trainer.callbacks.steps={steps}"]
    return cli_main(argv)


if __name__ == "__main__":
    main()
