"""Every use this framework makes of Lightning's private API, in one place.

Lightning's underscored attributes can change in any release without a deprecation. Each one this framework relies
on is reached through a function here (or, for the CLI's hook override, named here) and has a test in
``tests/test_lightning_private.py`` that checks the behaviour the framework needs, so that a Lightning upgrade that
changes one fails that test by name instead of a training run.

Checked against lightning 2.6.6. The private uses, and why:

- ``LightningOptimizer._on_before_step`` / ``_on_after_step`` (installed by ``_ManualOptimization``):
  :func:`step_without_counting`. In manual optimisation every optimiser step advances ``trainer.global_step``, so
  a method stepping two optimisers per iteration would count two steps (Lightning #17958); stepping the second
  without those hooks keeps one iteration one step (``EBMModule.manual_update``).
- ``ModelCheckpoint._should_skip_saving_checkpoint``, ``_monitor_candidates``, ``_save_topk_checkpoint``,
  ``_save_last_checkpoint``: :func:`save_checkpoint_now`. ``RunCheckpoint`` saves the final state at train end and
  before a SLURM requeue; ModelCheckpoint has no public "save now".
- ``Trainer._checkpoint_connector.hpc_save_path``: :func:`hpc_checkpoint_path`, the ``hpc_ckpt_<n>.ckpt`` name
  that Lightning restores by itself when a requeued job restarts (``SlurmRequeue``).
- ``Trainer.fit_loop.epoch_loop.batch_progress.current.processed``: :func:`batches_processed_this_epoch`.
  ``ResumableData`` saves how many batches of the epoch were trained, so that a resumed run skips them.
  ``fit_loop`` is a public attribute, but its type (``_FitLoop``), ``epoch_loop`` (``_TrainingEpochLoop``) and
  ``batch_progress`` (``_BatchProgress``) are private and undocumented.
- ``LightningModule._trainer``: :func:`attached_trainer`. ``module.trainer`` raises when no Trainer is attached;
  ``EBMModule`` asks whether one is (a module used outside ``fit``).
- The ``"_class_path"`` and ``"_instantiator"`` keys of ``checkpoint["hyper_parameters"]`` (written by
  LightningCLI's ``_InstantiatorFn``, read by ``core.saving._load_state``, which accepts only the instantiators in
  ``core.saving._ALLOWED_INSTANTIATORS``): :func:`cli_hparams`, :func:`has_cli_instantiator`,
  :func:`split_cli_hparams`. A module built in Python saves its hyper-parameters the way LightningCLI does, so
  that ``load_from_checkpoint`` rebuilds it through ``lightning.pytorch.cli.instantiate_module``; the CLI and
  ``visualize`` read the class a checkpoint names.
- ``LightningCLI._subcommand_parsers``: :func:`subcommand_parsers`. ``EBMCLI.parse_arguments`` sets a checkpoint's
  hyper-parameters as a subcommand parser's defaults.
- ``WandbLogger._wandb_init``: :func:`drop_wandb_anonymous`. Lightning always passes ``anonymous=None`` to
  ``wandb.init``, and wandb warns about that setting on every run; the CLI removes the key.
- ``LightningCLI._parse_ckpt_path``: ``EBMCLI._parse_ckpt_path`` (in ``lightning_ebm/cli.py``) overrides this
  private hook, which ``LightningCLI.__init__`` calls right after ``parse_arguments``, with a no-op: Lightning's
  version puts the checkpoint's model hyper-parameters over the user's ``--model.*`` flags, and
  ``EBMCLI._ckpt_defaults`` replaces it. The override works only while ``__init__`` still calls the hook by this
  name with no arguments. It stays in ``cli.py`` (an override cannot live elsewhere); its test is here.

Lightning also restores the newest ``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` by itself when ``fit`` is given no
``ckpt_path`` inside a SLURM job (``_CheckpointConnector._parse_ckpt_path``), which ``callbacks.requeue.SlurmRequeue``
relies on; that is Lightning's documented SLURM auto-requeue behaviour, not an attribute this framework touches.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.core.optimizer import LightningOptimizer

#: The instantiator LightningCLI records in a module's hyper-parameters (``_InstantiatorFn``).
CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
_CLASS_PATH = "_class_path"
_INSTANTIATOR = "_instantiator"


@contextmanager
def step_without_counting(optimizer: "LightningOptimizer") -> Iterator[None]:
    """Step a LightningOptimizer inside this block without advancing ``trainer.global_step``.

    In manual optimisation Lightning counts every optimiser step, so several optimisers would make ``max_steps``
    count fractions of iterations (Lightning #17958). The step keeps its precision and strategy handling but skips
    the counter hooks that Lightning's manual loop installs for each step.

    Private: ``LightningOptimizer._on_before_step`` and ``LightningOptimizer._on_after_step`` (set by
    ``_ManualOptimization.on_run_start`` to ``optim_step_progress.increment_ready`` / ``increment_completed``,
    from which ``global_step`` is computed).
    """
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def save_checkpoint_now(callback: "ModelCheckpoint", trainer: "Trainer") -> None:
    """Have ``callback`` save the current state (its top-k and ``last.ckpt``) unless this step is saved already.

    What ``ModelCheckpoint`` does at a periodic save, at any moment of ``fit``. Nothing during sanity checking,
    outside ``fit`` or with ``fast_dev_run``.

    Private: ``ModelCheckpoint._should_skip_saving_checkpoint(trainer)``, ``._monitor_candidates(trainer)``,
    ``._save_topk_checkpoint(trainer, candidates)`` and ``._save_last_checkpoint(trainer, candidates)``.
    """
    if not callback._should_skip_saving_checkpoint(trainer):
        candidates = callback._monitor_candidates(trainer)
        callback._save_topk_checkpoint(trainer, candidates)
        callback._save_last_checkpoint(trainer, candidates)


def hpc_checkpoint_path(trainer: "Trainer") -> str:
    """The next ``<default_root_dir>/hpc_ckpt_<n>.ckpt`` (``n`` one past the highest there), the file Lightning
    restores by itself when a requeued SLURM job restarts.

    Private: ``Trainer._checkpoint_connector`` (its static ``hpc_save_path(folder)``).
    """
    return trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)


def batches_processed_this_epoch(trainer: "Trainer") -> int:
    """The training batches of the current epoch that have been through ``training_step`` (the current one
    included, from ``on_train_batch_end`` on); restored from a checkpoint on a mid-epoch resume.

    Private: ``trainer.fit_loop.epoch_loop.batch_progress.current.processed`` (``_FitLoop.epoch_loop``,
    ``_TrainingEpochLoop.batch_progress``, ``_BatchProgress.current``).
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def attached_trainer(module: "LightningModule") -> "Trainer | None":
    """The Trainer ``module`` is attached to, or ``None`` (``module.trainer`` raises then).

    Private: ``LightningModule._trainer``.
    """
    return module._trainer


def cli_hparams(class_path: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` of the class at ``class_path`` in the form LightningCLI saves them: ``load_from_checkpoint`` then
    rebuilds the module (its ``class_path``/``init_args`` specs included) through LightningCLI's instantiator.

    Private: the ``"_class_path"`` and ``"_instantiator"`` keys of ``checkpoint["hyper_parameters"]`` (written by
    ``lightning.pytorch.cli._InstantiatorFn``, read by ``lightning.pytorch.core.saving._load_state``, which accepts
    only instantiators in ``_ALLOWED_INSTANTIATORS``).
    """
    return {_CLASS_PATH: class_path, **hparams, _INSTANTIATOR: CLI_INSTANTIATOR}


def has_cli_instantiator(hparams: Mapping[str, Any]) -> bool:
    """Whether ``hparams`` are saved the way LightningCLI saves them (with an instantiator).

    Private: the ``"_instantiator"`` key (see :func:`cli_hparams`).
    """
    return _INSTANTIATOR in hparams


def split_cli_hparams(hparams: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(class_path, init_args)`` of checkpointed hyper-parameters: the class LightningCLI recorded (``None`` when
    none is) and the rest, without Lightning's private keys.

    Private: the ``"_class_path"`` and ``"_instantiator"`` keys (see :func:`cli_hparams`).
    """
    rest = {k: v for k, v in hparams.items() if k not in (_CLASS_PATH, _INSTANTIATOR)}
    return hparams.get(_CLASS_PATH), rest


def subcommand_parsers(cli: "LightningCLI") -> "dict[str, LightningArgumentParser]":
    """The parser of each subcommand (``fit``, ``validate``, ...), set before ``parse_arguments`` runs.

    Private: ``LightningCLI._subcommand_parsers`` (filled by ``LightningCLI._add_subcommands``).
    """
    return cli._subcommand_parsers


def drop_wandb_anonymous(logger: Any) -> None:
    """Stop a ``WandbLogger`` from passing ``anonymous=None`` to ``wandb.init``, which makes wandb ≥ 0.19 print "The
    anonymous setting has no effect" on every run; call before the logger's experiment starts.

    Private: ``WandbLogger._wandb_init`` (the keyword arguments it gives ``wandb.init``).
    """
    init = logger._wandb_init
    if init.get("anonymous") is None:
        init.pop("anonymous", None)
