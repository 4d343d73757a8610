"""Shared by the quality benchmarks: train a recipe through the CLI for a wall-clock budget; the held-out digits."""

import subprocess
import sys
import time
from pathlib import Path

import torch

from datamodules import DigitsDataModule

ROOT = Path(__file__).resolve().parents[1]


def train_for(
    recipe: Path, name: str, extra: list[str], seconds: int | None, root: Path, steps: int | None = None
) -> tuple[Path, float, int]:
    """``fit`` the recipe (plus ``extra`` flags) in a fresh process for ``seconds`` (``--trainer.max_time``, no step
    limit) or, with ``seconds=None``, for ``steps`` iterations (``None``: the recipe's ``max_steps``).

    Returns the last checkpoint, the wall time including start-up, and the number of training iterations.
    """
    cmd = [sys.executable, "-m", "lightning_ebm", "fit", "--config", str(recipe), *extra]
    if seconds is not None:
        cmd += [f"--trainer.max_time=00:{time.strftime('%H:%M:%S', time.gmtime(seconds))}", "--trainer.max_steps=-1"]
    elif steps is not None:
        cmd += [f"--trainer.max_steps={steps}"]
    cmd += [
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root / name}",
    ]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    ckpt = next((root / name).rglob("last.ckpt"))
    return ckpt, time.perf_counter() - start, torch.load(ckpt, weights_only=True)["global_step"]


def digit_halves() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out half of scikit-learn's digits at 16×16 and as many training digits (the recipes' split)."""
    data = DigitsDataModule(image_size=16, val_fraction=0.5)
    held = torch.stack([data.val_set[i]["image"] for i in range(len(data.val_set))])
    train = torch.stack([data.train_set[i]["image"] for i in range(len(held))])
    return held, train


def print_swd_table(rows: list[tuple[str, float]], n_held: int, seconds: int) -> None:
    """Print ``(label, SWD)`` rows as a Markdown table under a line saying what was measured."""
    print(f"# {n_held} held-out 16x16 digits; training budget {seconds} s each; torch {torch.__version__}")
    print("\n| samples | SWD x1e3 against the held-out half |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
