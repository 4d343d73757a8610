"""Sample grids written during training."""

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from callbacks.images import log_image, save_png, stage_grid


class SampleGrid(Callback):
    """Every ``every_n_steps`` training steps and at the end of training, draw ``n_samples`` samples and write them as
    a PNG grid under ``<run dir>/samples/`` and to the attached logger (wandb, TensorBoard) as ``samples``.

    The grid shows every stage of :meth:`~lightning_ebm.methods.base.EBMModule.sample_stages` side by side (a
    generator's proposals next to their Langevin revisions, the grids of a multi-grid chain), so it works with every
    method; it runs on rank zero. A method that leaves a ``sampler_stats`` dict after sampling (the HMC acceptance rate
    and step size of :class:`~lightning_ebm.methods.GenerativeGradient`) has it logged as ``samples/<name>``.

    Args:
        every_n_steps: training steps between grids.
        n_samples: samples per grid.
        nrow: images per row (default: a square grid).
        folder: sub-folder of the run directory (``trainer.default_root_dir``).
    """

    def __init__(self, every_n_steps: int = 100, n_samples: int = 16, nrow: int | None = None, folder: str = "samples"):
        if every_n_steps < 1 or n_samples < 1:
            raise ValueError(
                f"SampleGrid needs every_n_steps >= 1 and n_samples >= 1, got {every_n_steps}, {n_samples}"
            )
        self.every_n_steps, self.n_samples, self.nrow, self.folder = every_n_steps, n_samples, nrow, folder
        self._last_step = -1

    @rank_zero_only
    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Draw the samples and write the grid for the current step; returns the PNG's path."""
        step = trainer.global_step
        grid = stage_grid(pl_module.sample_stages(self.n_samples), nrow=self.nrow)
        path = save_png(grid, Path(trainer.default_root_dir) / self.folder / f"step_{step:07d}.png")
        log_image(trainer, "samples", grid, step)
        stats = getattr(pl_module, "sampler_stats", None)  # e.g. the HMC acceptance rate of these samples
        if stats:
            for logger in trainer.loggers:
                logger.log_metrics({f"samples/{k}": v for k, v in stats.items()}, step=step)
        self._last_step = step
        return path

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Write a grid every ``every_n_steps`` optimiser steps."""
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the final grid (unless the last step already has one)."""
        if trainer.global_step != self._last_step:
            self.write(trainer, pl_module)
