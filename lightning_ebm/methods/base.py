"""The small base every learning method subclasses."""

import functools
import inspect
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_ebm.errors import ResumedElsewhereWarning, UsageError, imported, suggest
from lightning_ebm.lightning_private import (
    attached_trainer,
    cli_hparams,
    has_cli_instantiator,
    split_cli_hparams,
    step_without_counting,
)
from lightning_ebm.samplers.banks import Bank, processes


class DivergenceError(FloatingPointError):
    """Training produced NaN or infinite values (chains, loss or gradients); raised before they are saved."""


def check_choices(cls: type, values: Mapping[str, Any]) -> None:
    """Refuse a value of a ``Literal`` option of ``cls``'s constructors (its bases' and mixins' included) that is not
    one of the choices, as the command line does: ``chain_init="zero"`` would otherwise fall through to another
    behaviour.

    Raises:
        ValueError: naming the option, the value, the choices and the closest one.
    """
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        try:
            hints = typing.get_type_hints(init) if init is not None else {}
        except Exception:  # an annotation that does not evaluate here: nothing to check
            continue
        for name, hint in hints.items():
            if typing.get_origin(hint) is not Literal or name not in values:
                continue
            choices = typing.get_args(hint)
            if values[name] not in choices:
                close = suggest(str(values[name]), [str(c) for c in choices])
                raise ValueError(
                    f"{cls.__name__}({name}={values[name]!r}): choose one of {', '.join(map(repr, choices))}{close}"
                )


def outside_inference_mode(fn: Any) -> Any:
    """Run ``fn`` with inference mode off (and gradients still off) when it is called under
    ``torch.inference_mode()``, as Lightning's ``validate``, ``test`` and ``predict`` do.

    Samplers differentiate the score with respect to the chains, so every tensor a score closes over must be a
    normal tensor: a tensor made under inference mode (the class labels a conditional sampler creates, say) cannot
    be saved for backward. Outside inference mode, the tensors ``fn`` creates are normal, and tensor arguments
    made under inference mode are given to it as normal copies; otherwise ``fn`` runs as called.
    """

    def inference(value: Any) -> bool:
        return isinstance(value, Tensor) and value.is_inference()

    def normal(value: Any) -> Any:
        return value.clone() if inference(value) else value

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_inference_mode_enabled() and not any(map(inference, (*args, *kwargs.values()))):
            return fn(*args, **kwargs)
        grad = torch.is_grad_enabled()  # off under inference mode; the caller's otherwise
        with torch.inference_mode(False), torch.set_grad_enabled(grad):
            return fn(*map(normal, args), **{k: normal(v) for k, v in kwargs.items()})

    wrapper.outside_inference_mode = True
    return wrapper


class EBMModule(LightningModule):
    """Base of every learning method in ``lightning_ebm.methods``.

    It fixes what callbacks, metrics and the CLI rely on and nothing a method is about:

    - ``sample(n) -> (n, *sample_shape)`` in the data range ``[-1, 1]``: the model's samples, used by callbacks,
      metrics and ``predict``;
    - optimiser injection (``optimizer`` and ``lr_scheduler`` are callables taking the parameters / the optimiser,
      the way LightningCLI injects them); schedulers step every training iteration;
    - ``rng``: this rank's noise generator (a ``torch.Generator``), seeded from the run seed and the global rank
      (each DDP rank draws its own noise) and saved in checkpoints;
    - persistent state (:class:`~lightning_ebm.samplers.banks.Bank` attributes) saved for every rank and given
      back to each rank on resume;
    - a divergence guard: NaN or infinite chains, losses or gradients stop training with a
      :class:`DivergenceError` before anything non-finite reaches a checkpoint;
    - metric names: ``train/...``, ``val/...``, ``test/...``.

    Args:
        sample_shape: shape of one sample, ``(C, H, W)`` for images or ``(C, T)`` for audio; linked from the
            DataModule's ``sample_shape`` by the CLI.
        optimizer: builds the optimiser from the parameters (default Adam with torch's defaults; the recipes set
            the papers' values).
        lr_scheduler: builds a learning-rate scheduler from the optimiser, stepped every iteration; ``None`` for a
            constant rate.
    """

    SAMPLING = ("sample", "sample_stages")
    """The contract's sampling methods: a subclass's own are wrapped in :func:`outside_inference_mode`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.SAMPLING:
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "outside_inference_mode", False):
                setattr(cls, name, outside_inference_mode(own))

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 64, 64),
        *,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_sample_shape(sample_shape)
        super().__init__()
        self.save_hyperparameters()
        check_choices(type(self), self.hparams)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.optimizer = check_optimizer("optimizer", optimizer)
        self.lr_scheduler = lr_scheduler
        self._rng: torch.Generator | None = None
        self._saved_rng_state: Tensor | None = None
        self._first_nonfinite: dict[str, Tensor] = {}  # what -> first step it was not finite (-1: never), on device
        self.checkpoint_step: int | None = None
        """The training step of the checkpoint this model was loaded from (``validate``/``test``/``predict`` report
        it; Lightning restores the trainer's step only for ``fit``)."""
        # Denormal floats on the CPU: small weights and near-flat chains push activations into the denormal range,
        # which made Langevin steps 9-20x slower (docs/engineering.md, "Denormal floats"). Flushing them to zero is a
        # process-wide setting; it is made here so that sampling a loaded model in a notebook is fast too.
        torch.set_flush_denormal(True)

    # ----------------------------------------------------------------------------------------------- contract
    def sample(self, n: int, *, rng: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``(n, *sample_shape)`` in ``[-1, 1]``, detached, on the module's device; the same
        under ``torch.inference_mode()``, ``torch.no_grad()`` or neither (see :func:`outside_inference_mode`).

        Args:
            n: number of samples.
            rng: noise generator; ``None`` uses :meth:`seeded_rng`, so drawing samples never changes the
                training chains' noise.
        """
        raise NotImplementedError

    @staticmethod
    def images(batch: Any) -> Tensor:
        """The observed images ``(B, *sample_shape)`` of a batch: the batch itself, its ``"image"`` entry (the
        ``datamodules`` image sets) or ``"audio"`` entry (sound clips), or its first element (``(x, y)`` pairs)."""
        if isinstance(batch, Tensor):
            return batch
        if isinstance(batch, Mapping):
            return batch["image"] if "image" in batch else batch["audio"]
        return batch[0]

    def sample_stages(self, n: int, *, rng: torch.Generator | None = None) -> dict[str, Tensor]:
        """The samples and the stages they pass through, each ``(n, C, h, w)`` in [-1, 1], for sample grids (a
        generator's proposal and its revision, or the grids of a multi-grid chain); by default just ``sample(n)``."""
        return {"samples": self.sample(n, rng=rng)}

    def score_nets(self) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
        """The score networks whose nodes ``visualize`` samples (``lightning_ebm.nodes``): ``{attribute path: (net,
        input shape)}``, coarsest first; none by default (a generator-only method)."""
        return {}

    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        """Scalar measures of the model on held-out images ``x``, logged as ``val/<name>`` and ``test/<name>``."""
        return {}

    def evaluate_batch(self, batch: Any) -> dict[str, Tensor]:
        """:meth:`evaluate` of a held-out batch's images; methods that need more of the batch (a mask) override it."""
        return self.evaluate(self.images(batch))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log :meth:`evaluate_batch` under ``val/``."""
        self.log_dict({f"val/{k}": v for k, v in self.evaluate_batch(batch).items()}, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Log :meth:`evaluate_batch` under ``test/``."""
        self.log_dict({f"test/{k}": v for k, v in self.evaluate_batch(batch).items()}, sync_dist=True)

    def sample_numbers(self, batch: Any) -> Tensor:
        """This process's numbers ``(n,)`` for the samples a predict batch asks for, ``0, 1, 2, …`` on every rank.

        The DataModules' predict loaders give the indices ``0 … n_predict − 1``, which Lightning deals out to the
        ranks in turn (rank r gets r, r + W, r + 2W, …), so index i is this rank's sample i // W. A batch that is not a
        1-D integer tensor is numbered ``0 … len(batch) − 1``.
        """
        if isinstance(batch, Tensor) and batch.dim() == 1 and not batch.is_floating_point():
            return batch // self._world_size()
        return torch.arange(batch.shape[0] if isinstance(batch, Tensor) else len(batch))

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Samples for ``predict``: one per element of the batch, each from fresh noise; methods whose samples
        continue a limited set of chains number them by :meth:`sample_numbers` so that no two repeat one chain."""
        return self.sample(len(self.sample_numbers(batch)), rng=self.seeded_rng(10_000 + batch_idx))

    def setup(self, stage: str) -> None:
        """Flush denormal floats to zero on the CPU (again, in each DDP process); see ``__init__``."""
        torch.set_flush_denormal(True)

    # ------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The injected optimiser (and scheduler, stepped each iteration) over all parameters."""
        return self.with_scheduler(self.optimizer(self.parameters()))

    def with_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """``optimizer`` alone, or with the injected scheduler stepped every iteration."""
        if self.lr_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"},
        }

    def manual_update(self, loss: Tensor, clip_vals: Sequence[float | None] = ()) -> None:
        """One iteration of manual optimisation: every optimiser's gradients from one backward pass of ``loss``,
        each clipped to its entry of ``clip_vals`` (gradient norm; ``None`` or a missing entry: no clipping), one step
        of each, then one step of each scheduler. ``global_step`` (and so ``max_steps``) advances by one.

        One backward pass of a sum of losses that share no parameter gives each network exactly the gradient of its
        own loss, and keeps every parameter in the one backward pass that DDP synchronises.
        """
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt, clip in zip(optimizers, clip_vals):
            if clip is not None:
                self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizers[0].step()
        for opt in optimizers[1:]:
            with step_without_counting(opt):
                opt.step()
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()

    # ----------------------------------------------------------------------------------------------- noise
    def _rank_seed(self, salt: int) -> int:
        return (torch.initial_seed() * 1_000_003 + self.global_rank * 7_919 + salt * 104_729) % (2**63 - 1)

    @property
    def rng(self) -> torch.Generator:
        """This rank's noise generator on the module's device (restored from the checkpoint when resuming)."""
        g = self._rng
        if g is None or g.device != self.device:
            g = torch.Generator(device=self.device)
            state = self._saved_rng_state
            if state is not None and state.numel() == g.get_state().numel():
                g.set_state(state.cpu())
            else:
                if state is not None:
                    warnings.warn(
                        f"the checkpoint's noise generator state does not fit a {self.device.type} generator; "
                        "seeding a new one (the chains continue, their noise does not repeat the saved run)",
                        stacklevel=2,
                    )
                g.manual_seed(self._rank_seed(0))
            self._saved_rng_state = None
            self._rng = g
        return g

    def seeded_rng(self, salt: int = 0) -> torch.Generator:
        """A fresh generator seeded from the run seed, the rank, the global step and ``salt``."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self._rank_seed(1 + salt + 1_000 * self.global_step))
        return g

    # ------------------------------------------------------------------------------------ diagnostics, logs
    def logs_this_step(self) -> bool:
        """Whether the training step being run is one whose metrics reach the logger: every
        ``trainer.log_every_n_steps`` steps (the steps Lightning writes), or always outside a Trainer.

        Methods log their training metrics, and measure the diagnostics that only feed them (the gradient norm along
        the chains), on these steps only: on the other steps ``self.log`` would do its bookkeeping for values that no
        logger receives, and a progress bar showing them would read them back from the device every step.
        """
        trainer = attached_trainer(self)
        if trainer is None:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (trainer.global_step + 1) % every == 0

    def log_train(self, values: Mapping[str, Tensor], **kwargs: Any) -> None:
        """``log_dict(values, **kwargs)`` on the steps of :meth:`logs_this_step`."""
        if self.logs_this_step():
            self.log_dict(dict(values), **kwargs)

    # ---------------------------------------------------------------------------------------- divergence
    def check_finite(self, value: Tensor, what: str) -> None:
        """Stop with a :class:`DivergenceError` naming the step and the settings to lower if ``value`` is not finite.

        Inside the training loop the check stays on the device: it records the first step at which ``what`` was not
        finite and returns without waiting for the device (a host synchronisation every check would stall a GPU's
        queue several times per iteration). :meth:`verify_finite` raises for what was recorded, once per logging
        interval and before every checkpoint is written, so nothing non-finite is ever saved. Elsewhere (sampling a
        loaded model, ``predict``, ``visualize``) it raises at once.
        """
        trainer = attached_trainer(self)
        if trainer is None or not trainer.training:
            if not bool(torch.isfinite(value).all()):
                self.verify_finite()  # an earlier training step that diverged is the cause to name
                raise self._divergence(what, self.global_step)
            return
        bad = ~torch.isfinite(value.detach()).all()
        first = self._first_nonfinite.get(what)
        if first is None or first.device != bad.device:
            first = torch.full((), -1, dtype=torch.long, device=bad.device)
        self._first_nonfinite[what] = torch.where(bad & (first < 0), self.global_step, first)

    def verify_finite(self) -> None:
        """Raise the :class:`DivergenceError` of the earliest non-finite value :meth:`check_finite` recorded in the
        training loop (one host synchronisation)."""
        if not self._first_nonfinite:
            return
        steps = torch.stack([t.cpu() for t in self._first_nonfinite.values()]).tolist()
        found = [(step, what) for step, what in zip(steps, self._first_nonfinite) if step >= 0]
        if found:
            step, what = min(found, key=lambda pair: pair[0])  # the first recorded of the earliest step
            raise self._divergence(what, step)

    def _divergence(self, what: str, step: int) -> "DivergenceError":
        settings = {k: v for k, v in self.hparams.items() if "step_size" in k or k.endswith("sigma")}
        if attached_trainer(self) is not None:
            for i, opt in enumerate(self.trainer.optimizers):
                settings[f"lr[{i}]" if len(self.trainer.optimizers) > 1 else "lr"] = opt.param_groups[0]["lr"]
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())
        return DivergenceError(
            f"{what} became NaN or infinite at training step {step}. Training stopped before "
            f"saving this state, so the last checkpoint is the last good one. Lower the Langevin step size or "
            f"the learning rate (now {shown}), or use more Langevin steps, then resume with "
            "`fit --ckpt_path last` and the lowered values."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Record a non-finite gradient (see :meth:`check_finite`)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self.check_finite(torch.nn.utils.get_total_norm(grads), "the parameter gradient")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop a diverged run once per logging interval, not only at the next checkpoint (see :meth:`check_finite`)."""
        every = self.trainer.log_every_n_steps
        if every > 0 and self.trainer.global_step % every == 0:
            self.verify_finite()

    def on_train_end(self) -> None:
        """Stop with what the last steps recorded, if they diverged."""
        self.verify_finite()

    # ------------------------------------------------------------------------------------ checkpointing
    def _banks(self) -> dict[str, Bank]:
        return {name: value for name, value in vars(self).items() if isinstance(value, Bank)}

    def _world_size(self) -> int:
        return self.trainer.world_size if attached_trainer(self) is not None else 1

    def _gather(self, t: Tensor) -> Tensor:
        """Stack every rank's ``t`` into ``(W, ...)`` on the CPU (a collective: all ranks must call it)."""
        if self._world_size() == 1:
            return t.detach().cpu().unsqueeze(0)
        return self.all_gather(t.detach().to(self.device)).cpu()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save every rank's banks and noise generator; make the hyper-parameters loadable without pickles."""
        self.verify_finite()  # nothing non-finite is saved
        state: dict[str, Any] = {"world_size": self._world_size()}
        for name, bank in self._banks().items():
            value = bank.rank_state()
            if value is not None:
                state[f"bank.{name}"] = self._gather(value)
        state["rng"] = self._gather(self.rng.get_state())
        checkpoint["ebm_state"] = state
        hparams = checkpoint.get("hyper_parameters")
        if hparams is not None and not has_cli_instantiator(hparams):
            checkpoint["hyper_parameters"] = portable_hparams(type(self), hparams)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's, but a checkpoint of another method is refused with a :class:`ValueError` naming both classes
        (Lightning says the class "was blocked to prevent arbitrary code execution")."""
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except ValueError:
            try:
                checkpoint = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
                stored, _ = split_cli_hparams(checkpoint.get("hyper_parameters") or {})
            except Exception:
                stored = None
            if stored is not None and not _is_subclass(stored, cls):
                name = stored.rsplit(".", 1)[-1]
                raise ValueError(
                    f"{checkpoint_path} holds a {name} model, not a {cls.__name__}: load it with "
                    f"{name}.load_from_checkpoint (from {stored.rsplit('.', 1)[0]})"
                ) from None
            raise

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Give this rank its banks and noise generator back, and note the checkpoint's step; a checkpoint of another
        method is refused (:class:`UsageError`) before its weights are loaded."""
        stored, _ = split_cli_hparams(checkpoint.get("hyper_parameters") or {})
        trainer = attached_trainer(self)
        source = f"--ckpt_path {trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "the checkpoint"
        refuse_other_method(stored, type(self), source)
        self.checkpoint_step = int(checkpoint.get("global_step", 0))
        state = checkpoint.get("ebm_state")
        if not state:
            return
        rank, world = self.global_rank, self._world_size()
        notes = []
        for name, bank in self._banks().items():
            if f"bank.{name}" in state:
                note = bank.restore(state[f"bank.{name}"], rank, world)
                notes += [f"{name}: {note}"] if note else []
        states = state.get("rng")
        if states is not None and rank < states.shape[0]:
            # a copy: set_state of a row view (a non-zero storage offset) crashed rank 1 with a segfault on resume
            self._saved_rng_state = states[rank].clone()
            self._rng = None
        saved_world = int(state.get("world_size", 1 if states is None else states.shape[0]))
        if saved_world != world:
            kept = min(saved_world, world)
            notes.append(
                f"the noise generators of {_ranks(0, kept)} continue the saved ones"
                + (f", {_ranks(kept, world)} draw from new seeds" if world > saved_world else "")
                + (f", those of saved {_ranks(kept, saved_world)} are left out" if saved_world > world else "")
            )
        if notes:
            what = (
                f"was saved by {processes(saved_world)} and this run has {world}"
                if saved_world != world
                else "holds other numbers of chains than this run asks for"
            )
            rank_zero_warn(
                f"{source} {what}: the run continues from it, but not exactly as an uninterrupted run would: "
                f"{'; '.join(notes)}",
                category=ResumedElsewhereWarning,
            )


def _ranks(first: int, end: int) -> str:
    """``rank 3`` or ``ranks 3-7`` for the ranks ``first … end − 1``."""
    return f"rank {first}" if end - first == 1 else f"ranks {first}-{end - 1}"


MAX_CHANNELS = 16
"""The most channels a sample's first axis may have: more means a shape without its channel axis, ``(32, 32)``, or
with it last, ``(64, 64, 3)``."""


def check_sample_shape(sample_shape: Any) -> None:
    """Refuse a ``sample_shape`` that is not ``(C, H, W)`` or ``(C, T)`` of positive integers (at most
    :data:`MAX_CHANNELS` channels), naming it.

    Raises:
        ValueError: naming the value and the shape to give.
    """
    shape = tuple(sample_shape) if isinstance(sample_shape, Sequence) and not isinstance(sample_shape, str) else ()
    ints = all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    if len(shape) not in (2, 3) or not ints or shape[0] > MAX_CHANNELS:
        raise ValueError(
            f"sample_shape={sample_shape!r}: one sample's shape must be (C, H, W) for images or (C, T) for audio, "
            f"positive integers with the channels first (at most {MAX_CHANNELS}): (1, 32, 32), not (32, 32)"
        )


def check_optimizer(name: str, build: OptimizerCallable) -> OptimizerCallable:
    """``build`` (an optimiser class or callable of the parameters), once tried on a dummy parameter, so that a bad
    setting such as a negative learning rate is refused when the model is built, not when training starts.

    Raises:
        ValueError: ``"<name>: <the optimiser's complaint>"``.
    """
    try:
        build([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: {err} (set --model.{name}.init_args, e.g. lr, to a valid value)") from err
    return build


def refuse_other_method(stored: str | None, cls: type, source: str) -> None:
    """Refuse a checkpoint whose recorded method ``stored`` (a class path) is neither ``cls``, a subclass of it, nor
    a method ``cls`` refines; ``source`` names the checkpoint in the message.

    Raises:
        UsageError: naming both methods and what to do.
    """
    if stored is not None and not _is_subclass(stored, cls) and not _is_base(stored, cls):
        name, asked = stored.rsplit(".", 1)[-1], cls.__name__
        raise UsageError(
            f"{source} holds a {name} model; the config asks for {asked}: drop --config/--model, or give a "
            f"{asked} checkpoint"
        )


def _is_subclass(class_path: str, cls: type) -> bool:
    """Whether the class at ``class_path`` is ``cls`` or a subclass of it (``False`` when it does not import)."""
    found = imported(class_path)
    return isinstance(found, type) and issubclass(found, cls)


def _is_base(class_path: str, cls: type) -> bool:
    """Whether ``cls`` derives from the class at ``class_path`` (a checkpoint of the method ``cls`` refines)."""
    return any(f"{k.__module__}.{k.__qualname__}" == class_path for k in cls.__mro__)


def _import_path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _portable(value: Any) -> Any:
    """A config value that a jsonargparse parser reads back: classes as import paths, callables as class specs."""
    if isinstance(value, functools.partial):
        target = value.func if inspect.isclass(value.func) else None
        if target is None:  # jsonargparse's own partials keep the class among the positional arguments
            target = next((a for a in reversed(value.args) if inspect.isclass(a)), None)
        if target is None:
            raise TypeError(f"cannot write {value!r} as a config")
        return {
            "class_path": _import_path(target),
            "init_args": {k: _portable(v) for k, v in value.keywords.items()},
        }
    if inspect.isclass(value) or inspect.isfunction(value):
        return _import_path(value)
    if isinstance(value, Mapping):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(v) for v in value]
    if isinstance(value, torch.nn.Module):
        raise TypeError(f"cannot write the module {type(value).__name__} as a config: pass a class or a partial")
    return value


def portable_hparams(cls: type, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of a module built in Python, rewritten as the CLI would have saved them.

    Classes and ``functools.partial`` factories (nets, optimisers) become ``class_path``/``init_args`` specs, so the
    checkpoint loads with ``torch.load(weights_only=True)`` and ``Class.load_from_checkpoint(path)`` rebuilds them
    through Lightning's CLI instantiator.
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        try:
            out[key] = _portable(value)
        except TypeError as err:
            warnings.warn(f"hyper-parameter {key!r} is not saved in the checkpoint: {err}", stacklevel=2)
    return cli_hparams(_import_path(cls), out)
