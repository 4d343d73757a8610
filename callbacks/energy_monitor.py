"""The learning diagnostics of Nijkamp et al. (AAAI 2020, "On the Anatomy of MCMC-based ML Learning of EBMs")."""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

KEYS = ("f_data", "f_sample", "grad_norm")


class EnergyMonitor(Callback):
    """Log the scores of observed and synthesized images, their gap, and the gradient norm along the chains.

    Logged on the steps whose metrics reach the logger (every ``trainer.log_every_n_steps``; averaged over ranks):
    ``train/f_data`` (mean f of the observed batch), ``train/f_sample`` (mean f of the revised chains),
    ``train/energy_gap`` (their difference, d_{s_t} in Nijkamp et al.: it oscillates around 0 when learning is
    stable, and drifts when it diverges) and ``train/grad_norm`` (the mean norm of ∂f/∂x along the chains, r_t). The
    values come from the method's ``training_step`` output, which carries them on those steps only: the methods
    measure the gradient norm only when it is logged.

    Args:
        every_n_steps: log only on the logging steps that are also multiples of this (``None``: every logging step).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"EnergyMonitor needs every_n_steps >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._warned = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log the diagnostics of this step, if the method measured them."""
        step = trainer.global_step
        if self.every_n_steps is not None and step % self.every_n_steps != 0:
            return
        if not isinstance(outputs, dict) or not all(k in outputs for k in KEYS):
            logging_step = trainer.log_every_n_steps > 0 and step % trainer.log_every_n_steps == 0
            if logging_step and not self._warned:
                rank_zero_warn(
                    f"EnergyMonitor: {type(pl_module).__name__}.training_step returns none of {KEYS}; nothing to log"
                )
                self._warned = True
            return
        values = {f"train/{k}": torch.as_tensor(outputs[k]).float() for k in KEYS}
        values["train/energy_gap"] = values["train/f_data"] - values["train/f_sample"]
        pl_module.log_dict(values, on_step=True, on_epoch=False, sync_dist=True)
