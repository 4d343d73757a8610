"""Sample grids written during training: captioned, enlarged pictures with the observed images beside."""

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from callbacks.images import MIN_SIDE, log_image, save_png, stage_grid

RUN_DIR_ENV = "LIGHTNING_EBM_RUN_DIR"
"""The variable in which the CLI names the run directory it made (``lightning_ebm.cli.RUN_DIR_ENV``)."""

PANEL_NAMES = {"samples": "synthesized", "generator": "proposal", "descriptor": "revision"}
"""How the keys of ``sample_stages`` are written over their panels (other keys as they are)."""


def run_title(trainer: Trainer, pl_module: LightningModule) -> str:
    """The recipe's name when the CLI made the run directory (``<root>/<recipe>/<run>``), else the method's."""
    run_dir = Path(trainer.default_root_dir)
    if os.environ.get(RUN_DIR_ENV) and Path(os.environ[RUN_DIR_ENV]).resolve() == run_dir.resolve():
        return run_dir.parent.name
    return type(pl_module).__name__


def panel_names(keys: Sequence[str], observed: bool) -> tuple[list[str], list[str]]:
    """The panels' names (``observed`` first when shown) and the separators between them: ``->`` between the grids
    of a multi-grid chain (keys such as ``"4x4"``), ``|`` elsewhere. Pillow's default font has no × or → glyph."""
    names = (["observed"] if observed else []) + [PANEL_NAMES.get(k, k) for k in keys]
    grids = [bool(re.fullmatch(r"\d+x\d+", name)) for name in names]
    separators = ["->" if a and b else "|" for a, b in itertools.pairwise(grids)]
    return names, separators


def caption_text(title: str, step: int, names: Sequence[str], separators: Sequence[str]) -> str:
    """One line saying what a grid shows: ``"texture - step 700: observed | synthesized"``."""
    panels = names[0] + "".join(f" {s} {n}" for s, n in zip(separators, names[1:]))
    return f"{title} - step {step}: {panels}"


class SampleGrid(Callback):
    """Before training (step 0), every ``every_n_steps`` training steps and at the end of training, draw
    ``n_samples`` samples and write them as one picture, ``<run dir>/samples/step_<N>.png``, also handed to the
    attached logger (wandb, TensorBoard) as ``samples``: the same uint8 pixels.

    The picture shows every stage of :meth:`~lightning_ebm.methods.base.EBMModule.sample_stages` side by side (a
    generator's proposals next to their Langevin revisions, the grids of a multi-grid chain), after an ``observed``
    panel: training images from the DataModule's first training batches (as many as samples, if there are), resized
    to the sample size only when they differ. Samples of a method with ``num_classes`` (sample ``i`` of class
    ``i mod K``: :class:`~lightning_ebm.methods.GenerativeGradient`) are laid out one class per column, named.
    Small samples are enlarged by a whole factor (nearest neighbour) until the picture is ``min_side`` pixels on
    its shorter side; a caption band above names the run (``caption``), the step and each panel.

    It runs on rank zero. A method that leaves a ``sampler_stats`` dict after sampling (the HMC acceptance rate and
    step size of GenerativeGradient) has it logged as ``samples/<name>``.

    Args:
        every_n_steps: training steps between grids.
        n_samples: samples per grid.
        nrow: images per row (default: a square grid, or one class per column).
        folder: sub-folder of the run directory (``trainer.default_root_dir``).
        caption: the run's name in the caption; ``None``: the recipe's name when the CLI made the run directory
            (``<root>/<recipe>/<time>``), else the method's class name.
        observed: show the observed panel (when the DataModule gives images of the samples' channels).
        at_start: write a grid before the first training step (not when resuming at a step that has one). Image
            models only: sound models (:class:`~callbacks.AudioSamples`) write nothing at the start.
        min_side: the shorter side, in pixels, that the picture is enlarged to at least.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        n_samples: int = 16,
        nrow: int | None = None,
        folder: str = "samples",
        caption: str | None = None,
        observed: bool = True,
        at_start: bool = True,
        min_side: int = MIN_SIDE,
    ):
        if every_n_steps < 1 or n_samples < 1 or min_side < 1:
            raise ValueError(
                f"SampleGrid needs every_n_steps >= 1, n_samples >= 1 and min_side >= 1, got {every_n_steps}, "
                f"{n_samples}, {min_side}"
            )
        self.every_n_steps, self.n_samples, self.nrow, self.folder = every_n_steps, n_samples, nrow, folder
        self.caption, self.observed, self.at_start, self.min_side = caption, observed, at_start, min_side
        self._last_step = -1
        self._observed: Tensor | None = None
        self._observed_read = False

    def path(self, trainer: Trainer, step: int) -> Path:
        """Where the grid of ``step`` goes."""
        return Path(trainer.default_root_dir) / self.folder / f"step_{step:07d}.png"

    def observed_images(self, trainer: Trainer, pl_module: LightningModule, like: Tensor) -> Tensor | None:
        """Up to ``n_samples`` training images ``(m, C, h, w)`` on the CPU, read once from the first batches of the
        DataModule's training loader and resized (nearest) to ``like``'s size; ``None`` when there is no DataModule
        or its batches hold no images with ``like``'s channels."""
        if not self._observed_read:
            self._observed_read = True
            self._observed = self._read_observed(trainer, pl_module, like.shape[1])
        if self._observed is None or self._observed.shape[-2:] == like.shape[-2:]:
            return self._observed
        return torch.nn.functional.interpolate(self._observed.float(), size=like.shape[-2:], mode="nearest")

    def _read_observed(self, trainer: Trainer, pl_module: LightningModule, channels: int) -> Tensor | None:
        datamodule = getattr(trainer, "datamodule", None)
        images = getattr(pl_module, "images", None)
        if datamodule is None or images is None:
            return None
        found: list[Tensor] = []
        for batch in datamodule.train_dataloader():
            x = images(batch)
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels or not x.is_floating_point():
                return None
            found.append(x[: self.n_samples - sum(len(f) for f in found)].detach().cpu())
            if sum(len(f) for f in found) >= self.n_samples:
                break
        return torch.cat(found) if found else None

    def picture(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Tensor, str]:
        """Draw the samples and make the captioned uint8 picture ``(C, H, W)`` of this step, and its caption."""
        stages = pl_module.sample_stages(self.n_samples)
        largest = max(stages.values(), key=lambda x: x.shape[-1])
        observed = self.observed_images(trainer, pl_module, largest) if self.observed else None
        names, separators = panel_names(list(stages), observed is not None)
        panels = ([] if observed is None else [observed]) + list(stages.values())
        nrow, columns = self.nrow, None
        classes = getattr(pl_module, "num_classes", None)
        if isinstance(classes, int) and classes > 1:  # sample i is of class i mod K
            nrow = nrow or min(classes, self.n_samples)
            if nrow % classes == 0 or self.n_samples <= nrow:
                columns = {names[-1]: [f"class {j % classes}" for j in range(min(nrow, self.n_samples))]}
        title = self.caption or run_title(trainer, pl_module)
        step = trainer.global_step
        grid = stage_grid(
            dict(zip(names, panels)),
            nrow=nrow,
            title=[f"{title} - step {step}"],
            separators=separators,
            column_labels=columns,
            min_side=self.min_side,
        )
        return grid, caption_text(title, step, names, separators)

    @rank_zero_only
    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Draw the samples and write the picture for the current step; returns the PNG's path."""
        step = trainer.global_step
        grid, caption = self.picture(trainer, pl_module)
        path = save_png(grid, self.path(trainer, step))
        log_image(trainer, "samples", grid, step, caption=caption)
        stats = getattr(pl_module, "sampler_stats", None)  # e.g. the HMC acceptance rate of these samples
        if stats:
            for logger in trainer.loggers:
                logger.log_metrics({f"samples/{k}": v for k, v in stats.items()}, step=step)
        self._last_step = step
        return path

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the grid of the starting step (0, or a resumed step that has none yet); image models only."""
        step = trainer.global_step
        images = len(getattr(pl_module, "sample_shape", ())) == 3
        if self.at_start and images and not self.path(trainer, step).exists():
            self.write(trainer, pl_module)

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
