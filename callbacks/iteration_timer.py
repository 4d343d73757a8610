"""Seconds per training iteration and where they go: the training step, the data loader and the MCMC sampler."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_ebm.process_clock import seconds_since_process_start

SAMPLERS = ("langevin", "hmc", "infer_latent")
"""The sampler entry points of :mod:`lightning_ebm.mixins`: Langevin on x (``LangevinMixin.langevin``), HMC on x
(``HMCMixin.hmc``) and latent Langevin on z (``GeneratorMixin.infer_latent``)."""

DATA_ACTION = "train_dataloader_next"
"""The end of the name of the profiler action Lightning runs around ``next()`` of the train loader
(``[_TrainingEpochLoop].train_dataloader_next``)."""

KEYS = ("iteration_s", "step_s", "data_s", "sampler_s")


class IterationTimer(Callback):
    """Time every training iteration, and the share of it spent in the MCMC sampler and in the data loader.

    An opt-in diagnostic (``--config timing``, or ``--trainer.callbacks+=IterationTimer``). Logged on every step,
    each the mean over the iterations since the last write to the logger (every ``trainer.log_every_n_steps``):

    - ``time/iteration_s``: wall seconds from the end of one training iteration to the end of the next (this
      callback's ``on_train_batch_end``): everything, the data loading, the step, the callbacks, and the validation
      and checkpoints that fall between two steps;
    - ``time/step_s``: from this callback's ``on_train_batch_start`` to its ``on_train_batch_end``: ``training_step``
      (sampling included), the backward pass and the optimiser step, and the batch hooks of the callbacks between;
    - ``time/data_s``: seconds in the train loader's ``next()`` (Lightning's ``train_dataloader_next`` profiler
      action: loading, decoding, collating); starting the loader's iterator at an epoch start is not in it;
    - ``time/sampler_s``: seconds in the module's samplers (``langevin``, ``hmc``, ``infer_latent``) called from
      ``training_step``; samples that callbacks or validation draw are not counted;
    - ``time/sampler_share``: ``sampler_s / iteration_s``, in (0, 1] for a method that samples in its step.

    At the end of ``fit`` rank zero prints one line to stderr: the mean seconds per iteration and iterations per
    second, the step, sampler and data shares, over the iterations after the first ``warmup`` (which pay for
    memory allocation, compilation and caches; all of them if there are no more), and how long after the process
    started the first training step began (Linux), which is the start-up time of the command.

    The sampler is timed by wrapping the module's sampler methods (and ``training_step``, to tell its samples from
    others) with instance attributes at ``on_fit_start``; they are removed at the end of ``fit``, whether it ends
    or fails. On a CUDA device the timer calls ``torch.cuda.synchronize()`` at every boundary it measures (before and
    after each sampler call, at the start and the end of each iteration), so that the asynchronous GPU work is
    counted where it is queued; those synchronisations are the timer's own cost and can slow a run down a little,
    which is why it is off unless asked for.

    Args:
        warmup: the first iterations left out of the summary line (they are logged).
    """

    def __init__(self, warmup: int = 2) -> None:
        if warmup < 0:
            raise ValueError(f"IterationTimer needs warmup >= 0, got {warmup}")
        self.warmup = warmup
        self.iterations: list[dict[str, float]] = []
        """Every timed iteration of the last fit: seconds under the keys of :data:`KEYS`."""
        self.startup_s: float | None = None
        """Seconds from the start of the process to the start of the first training step of the last fit."""
        self._restore: list[tuple[Any, str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._window: list[dict[str, float]] = []
        self._last_end: float | None = None
        self._step_start: float | None = None
        self._in_step = False
        self._depth = 0
        self._sampler = 0.0
        self._data = 0.0
        self._data_start: float | None = None
        self._cuda: torch.device | None = None

    # ------------------------------------------------------------------------------------------ clock
    def _now(self) -> float:
        """``time.perf_counter()`` after the queued GPU work is done (on CUDA)."""
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    # --------------------------------------------------------------------------------------- wrappers
    def _patch(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Replace ``owner.name`` by ``make(owner.name)`` as an instance attribute, remembering how to undo it."""
        original = getattr(owner, name, None)
        if not callable(original):
            return
        own = vars(owner).get(name, _MISSING)
        wrapper = functools.wraps(original)(make(original))
        setattr(owner, name, wrapper)
        self._restore.append((owner, name, own))

    def _timed_sampler(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def sampler(*args: Any, **kwargs: Any) -> Any:
            if not self._in_step or self._depth:  # outside training_step, or nested in a timed call
                return original(*args, **kwargs)
            self._depth += 1
            start = self._now()
            try:
                return original(*args, **kwargs)
            finally:
                self._sampler += self._now() - start
                self._depth -= 1

        return sampler

    def _marked_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def training_step(*args: Any, **kwargs: Any) -> Any:
            self._in_step = True
            try:
                return original(*args, **kwargs)
            finally:
                self._in_step = False

        return training_step

    def _profiler_start(self, original: Callable[[str], None]) -> Callable[[str], None]:
        def start(action_name: str) -> None:
            if action_name.endswith(DATA_ACTION):
                self._data_start = time.perf_counter()
            original(action_name)

        return start

    def _profiler_stop(self, original: Callable[[str], None]) -> Callable[[str], None]:
        def stop(action_name: str) -> None:
            original(action_name)
            if action_name.endswith(DATA_ACTION) and self._data_start is not None:
                self._data += time.perf_counter() - self._data_start
                self._data_start = None

        return stop

    def _unpatch(self) -> None:
        """Put back every attribute :meth:`_patch` replaced (an instance attribute the owner had, or none)."""
        while self._restore:
            owner, name, own = self._restore.pop()
            if own is _MISSING:
                vars(owner).pop(name, None)
            else:
                setattr(owner, name, own)

    # ------------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wrap the samplers, ``training_step`` and the profiler's start and stop."""
        self._unpatch()
        self._reset()
        self.iterations, self.startup_s = [], None
        self._cuda = pl_module.device if pl_module.device.type == "cuda" else None
        for name in SAMPLERS:
            self._patch(pl_module, name, self._timed_sampler)
        self._patch(pl_module, "training_step", self._marked_step)
        self._patch(trainer.profiler, "start", self._profiler_start)
        self._patch(trainer.profiler, "stop", self._profiler_stop)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The first iteration is counted from here."""
        self._last_end = self._now()
        self._data = self._sampler = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """The step starts."""
        if self.startup_s is None:
            self.startup_s = seconds_since_process_start()
        self._step_start = self._now()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """The iteration ends: record it and log the means of the iterations since the last write."""
        end = self._now()
        if self._step_start is None or self._last_end is None:
            return
        times = {
            "iteration_s": end - self._last_end,
            "step_s": end - self._step_start,
            "data_s": self._data,
            "sampler_s": self._sampler,
        }
        self._last_end, self._step_start = end, None
        self._data = self._sampler = 0.0
        self.iterations.append(times)
        self._window.append(times)
        means = {f"time/{key}": sum(t[key] for t in self._window) / len(self._window) for key in KEYS}
        means["time/sampler_share"] = means["time/sampler_s"] / max(means["time/iteration_s"], 1e-12)
        pl_module.log_dict(means, on_step=True, on_epoch=False, batch_size=1)
        n = trainer.log_every_n_steps
        if n <= 0 or trainer.global_step % n == 0:
            self._window = []

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put the methods back and print the summary line (rank zero)."""
        self._unpatch()
        if trainer.is_global_zero and self.iterations:
            print(self.summary(), file=sys.stderr, flush=True)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Put the methods back."""
        self._unpatch()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Put the methods back (if a hook above was skipped)."""
        self._unpatch()

    # ---------------------------------------------------------------------------------------- summary
    def summary(self) -> str:
        """One line: seconds per iteration and the shares, over the iterations after the warm-up."""
        counted = self.iterations[self.warmup :] or self.iterations
        skipped = len(self.iterations) - len(counted)
        total = {key: sum(t[key] for t in counted) for key in KEYS}
        per_iteration = total["iteration_s"] / len(counted)
        share = {key: 100 * total[key] / max(total["iteration_s"], 1e-12) for key in ("step_s", "sampler_s", "data_s")}
        started = (
            "" if self.startup_s is None else f"; the first step began {self.startup_s:.2f} s after the process started"
        )
        return (
            f"IterationTimer: {per_iteration:.4g} s/iteration ({1 / max(per_iteration, 1e-12):.3g} iterations/s) "
            f"over {len(counted)} iterations (after {skipped} of warm-up); of that, training step "
            f"{share['step_s']:.1f} %, sampler {share['sampler_s']:.1f} %, data {share['data_s']:.1f} %{started}"
        )


_MISSING = object()
