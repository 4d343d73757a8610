"""A training progress bar that counts optimisation steps toward ``max_steps`` over the whole fit."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, but the training bar shows ``trainer.global_step`` out of ``max_steps``.

    Runs here are budgeted in steps, not epochs: a texture recipe has one batch per epoch (Lightning's bar
    would read ``Epoch 412: 1/1``) and a digit recipe restarts the bar every epoch, so neither shows how far
    the run is or when it ends. This bar is created once per fit and never reset::

        step:  59%|█████▉    | 412/700 [02:10<01:30, 2.10it/s, epoch=3, train/loss=0.123]

    - total: ``trainer.max_steps``; when that is unset (-1), ``trainer.estimated_stepping_batches`` if finite,
      else no total (count and rate only);
    - count: ``trainer.global_step`` (the framework keeps it equal to the training iterations, manual
      optimisation with two optimisers included), so a resumed run starts at the restored step and, through
      tqdm's ``initial``, the rate and ETA count only this run's steps;
    - ``epoch=`` leads the metrics only when an epoch has more than one batch; the logger's ``v_num`` is left out.

    Validation, test and predict bars and the metrics postfix are Lightning's. ``refresh_rate`` and
    ``process_position`` are as in :class:`~lightning.pytorch.callbacks.TQDMProgressBar`; the training bar
    is always left on screen when the fit ends.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)

    def _total_steps(self) -> int | None:
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps
        total = convert_inf(trainer.estimated_stepping_batches)
        return int(total) if total is not None and total > 0 else None

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc="step",
            total=self._total_steps(),
            initial=self.trainer.global_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: the run directory, printed at the start, names the run
        if trainer.num_training_batches > 1:
            return {"epoch": trainer.current_epoch, **metrics}
        return metrics

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole fit: nothing to reset

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        n = trainer.global_step
        bar = self.train_progress_bar
        if n != bar.n and self.is_enabled and (n % self.refresh_rate == 0 or n == bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            _show(bar, n)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # the postfix follows the steps (and validation); the bar stays open

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self.train_progress_bar
        if not bar.disable and bar.n != trainer.global_step:  # a step skipped by refresh_rate
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            _show(bar, trainer.global_step)
        bar.close()


def _show(bar: Tqdm, n: int) -> None:
    """Move the bar to step ``n`` and redraw it."""
    if not bar.disable:
        bar.n = n
        bar.refresh()
