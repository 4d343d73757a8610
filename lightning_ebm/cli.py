"""``fit``, ``validate``, ``test`` and ``predict``: :class:`EBMCLI`, LightningCLI with the project's links, defaults,
run directories and console. No training logic here."""

import hashlib
import logging
import netrc
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import callbacks  # noqa: F401  (registers the callback classes for short names in configs)
import datamodules  # noqa: F401  (registers the DataModules for ``--data TextureDataModule``)
import lightning_ebm.methods  # noqa: F401  (registers the methods for ``--model GenerativeConvNet``)
from callbacks import MetricCurves, RunCheckpoint, SampleWriter, SharedRunDirectory, SlurmRequeue, StepProgressBar
from lightning_ebm import recipes
from lightning_ebm.argv import CKPT_KEYWORDS, check_ckpt_path, flag_value, program
from lightning_ebm.checkpoint_io import AtomicCheckpointIO, newest_intact, read_checkpoint, remove_partial_saves
from lightning_ebm.errors import UsageError, condense, imported, parser_error
from lightning_ebm.lightning_private import drop_wandb_anonymous, split_cli_hparams, subcommand_parsers
from lightning_ebm.methods.base import EBMModule, refuse_other_method
from lightning_ebm.slurm import SlurmJob

RUN_DIR_ENV = "LIGHTNING_EBM_RUN_DIR"
"""Environment variable holding the run directory, so that DDP worker processes write into the same one."""

_PARSER_MODE = {"parser_mode": "omegaconf+"}
SUBCOMMANDS = ("fit", "validate", "test", "predict")

# Warnings that a run of a shipped recipe would print and that say nothing to its user; each with the reason.
QUIET = (
    # Lightning's own deprecations, raised inside Lightning (its all_gather calls torch's deprecated autograd one)
    r".*isinstance\(treespec, LeafSpec\)",
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
    # one-image texture sets are map-style datasets of one batch; both warnings misread that as a mistake
    r"Your `IterableDataset` has `__len__` defined",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r".*does not have many workers which may be a bottleneck",
    # no seed given: LightningCLI picks one and writes it into the run's config.yaml, so the run is reproducible
    r"No seed found, seed set to",
    # SLURM's srun on PATH outside a job: jobs are started by `submit`, which runs srun itself
    r"The `srun` command is available on your system but is not used",
)


BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def _int_first_batch_limits() -> None:
    """Make ``--trainer.limit_val_batches=1`` (and a preset's ``limit_val_batches: 1``) one batch, not 100 %.

    The Trainer annotates these ``Optional[Union[int, float]]``, but typing caches unions by equality, which ignores
    the order, so the object Python hands out is often an equal union built earlier with float first; jsonargparse
    tries the members in order and reads ``1`` as ``1.0``, which Lightning takes as the whole set (larger integers
    survive, as Lightning turns 5.0 back into 5). An uncached ``int | float | None`` keeps the user's int an int.
    """
    annotations = Trainer.__init__.__annotations__
    for name in BATCH_LIMITS:
        annotations[name] = int | float | None


_int_first_batch_limits()


class _NoAdverts(logging.Filter):
    """Drop Lightning's tip to install its cloud logger (printed by every Trainer that has another logger) and its
    "Seed set to" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the tip and the seed (which the run's config.yaml records)."""
        return "litlogger" not in str(record.msg) and "Seed set to" not in str(record.msg)


def quiet() -> None:
    """Ignore the warnings of :data:`QUIET` and Lightning's advert, in this process."""
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in log.filters):
            log.addFilter(_NoAdverts())


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _new_dir(parent: Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``parent/name-2``, ``-3``, ... if it exists: ``mkdir`` without
    ``exist_ok`` is atomic, so runs started in the same second never share a directory."""
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 10_000):
        path = parent / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UsageError(f"{parent} holds 10,000 runs named {name}: choose another --trainer.default_root_dir")


def _rank_zero_process() -> bool:
    """Whether this is the process the user started, or global rank zero of processes that a launcher started: not a
    DDP worker that Lightning, ``srun``, ``torchrun`` or another launcher started. Launchers say which process is which
    by ``RANK`` (``torchrun``), ``SLURM_PROCID`` (``srun``), or only ``NODE_RANK`` and ``LOCAL_RANK`` (Lightning's
    convention for processes that it did not start itself: rank zero is local rank 0 of node 0)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name):
            return int(os.environ[name]) == 0
    return all(int(os.environ.get(name) or 0) == 0 for name in ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK"))


def _config_files(config: Any) -> tuple[list[Path], list[Path]]:
    """The ``--config`` files of a parsed config, and those of them that are recipes (in an ``experiments`` folder)."""
    files = [Path(str(p)) for p in (config.get("config") or [])]
    return files, [p for p in files if p.parent.name == "experiments"]


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of a run directory: the same in every process and on every resume or requeue of the run,
    different for every other directory (its name and a hash of its absolute path)."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_dir.parent.name}-{run_dir.name}")[-55:] + f"-{digest}"


def _wandb_logged_in() -> bool:
    """Whether wandb has credentials here (``WANDB_API_KEY`` or a netrc entry written by ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


_EXPONENT_ONLY = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _python_value(arg: str) -> str:
    """``--key=None`` → ``--key=null`` and ``--key=1e-05`` → ``--key=1.0e-05``: Python's ``str()`` of a value as YAML
    reads it; anything else unchanged."""
    key, eq, value = arg.partition("=")
    if not (eq and key.startswith("--")):
        return arg
    if value == "None":
        return f"{key}=null"
    if _EXPONENT_ONLY.fullmatch(value):
        mantissa, _, exponent = value.lower().partition("e")
        return f"{key}={mantissa}.0e{exponent}"
    return arg


def command_line(args: Sequence[str]) -> list[str]:
    """The arguments as the parser reads them: bare recipe names resolved, sweep agents' values made YAML."""
    return [_python_value(a) for a in recipes.expand(args)]


class EBMArgumentParser(LightningArgumentParser):
    """The parser of every subcommand: a refused input raises :class:`UsageError` with one line instead of printing
    the whole usage before the message."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """One line that names the value (and the nearest valid option), as a :class:`UsageError`."""
        if not self.exit_on_error:  # jsonargparse's own trial parses
            super().error(message, ex)
        parser_error(self, message, ex)


def with_csv_logger(loggers: Any, run_dir: Path) -> Any:
    """The trainer's ``logger`` (built) with a CSVLogger writing ``<run_dir>/csv/metrics.csv`` added.

    Added to one logger or a list of loggers that holds no CSVLogger; ``False``/``None`` (no logger) and ``True``
    (Lightning's default logger) are returned as they are. When ``<run_dir>/csv`` already holds files (a resumed run
    in its own directory) the new CSV goes to ``<run_dir>/csv-<time>/``: Lightning's CSVLogger would delete the
    earlier file. It is added to the built trainer, not to the config, so a run's ``config.yaml`` used again as a
    config gets a CSV in the new run's directory.
    """
    if loggers is None or isinstance(loggers, bool):
        return loggers
    listed = list(loggers) if isinstance(loggers, (list, tuple)) else [loggers]
    if any(isinstance(logger, CSVLogger) for logger in listed):
        return loggers
    used = (run_dir / "csv").is_dir() and any((run_dir / "csv").iterdir())
    return [*listed, CSVLogger(run_dir, name="", version=f"csv-{_stamp()}" if used else "csv")]


def with_atomic_checkpoints(plugins: Any, strategy: Any) -> Any:
    """The trainer's ``plugins`` with :class:`~lightning_ebm.checkpoint_io.AtomicCheckpointIO` added, unless a
    checkpoint plugin is configured or the strategy writes sharded checkpoints its own way (FSDP, DeepSpeed)."""
    listed = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    sharded = isinstance(strategy, str) and ("fsdp" in strategy or "deepspeed" in strategy)
    if sharded or any(isinstance(p, CheckpointIO) for p in listed):
        return plugins
    return [*listed, AtomicCheckpointIO()]


class RunConfig(SaveConfigCallback):
    """Write the resolved config into the run directory and upload it to wandb when wandb logs the run.

    The first config of a run directory is ``config.yaml``; a resumed run adds ``config-<stage>-<time>.yaml`` beside it
    instead of overwriting it.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Rank zero: write the config file and hand the config to wandb."""
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.yaml"
        if path.exists():
            path = run_dir / f"config-{getattr(stage, 'value', stage)}-{_stamp()}.yaml"  # stage: a TrainerFn enum
        wandb = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if self.multifile:
            self.parser.save(self.config, path, skip_unset=False, overwrite=True, multifile=True)
            text = self.parser.dump(self.config, skip_unset=False) if wandb else ""
        else:  # what save writes then: one dump, which wandb gets too (a dump takes ~0.3 s on a slow CPU)
            text = self.parser.dump(self.config, skip_unset=False)
            path.write_text(text)
        for logger in wandb:
            logger.experiment.config.update(yaml.safe_load(text), allow_val_change=True)


class EBMCLI(LightningCLI):
    """The command line of ``fit``, ``validate``, ``test`` and ``predict``.

    - every method (``lightning_ebm.methods``) and DataModule (``datamodules``) is selectable by class path or
      name; the DataModule's ``sample_shape`` is linked into the model;
    - ``--config NAME`` takes a shipped recipe or preset by its bare name (``texture``, ``debug``) as well as a file;
    - configs are parsed in jsonargparse's ``omegaconf+`` mode: ``${.key}`` interpolations resolve after
      command-line overrides, so one override reaches every use;
    - every run writes everything (resolved config, ``checkpoints/`` with ``last.ckpt``, samples, logger files)
      under one run directory ``<trainer.default_root_dir>/<recipe>/<time>`` (``job-<id>`` in a SLURM or torchrun
      job), the same for every process however they were launched (:class:`callbacks.SharedRunDirectory`), printed
      at the start; a summary of
      where things are is printed at the end; ``fit --ckpt_path last`` continues the newest run of the recipe in its
      own directory (so does ``--ckpt_path`` of a run's checkpoint), and ``validate``/``test``/``predict
      --ckpt_path FILE`` write into ``<run of FILE>/<subcommand>-<time>``;
    - the default logger is wandb, offline unless wandb has credentials on this machine (set ``WANDB_MODE`` to
      override), with a run id derived from the run directory, so a resumed or requeued run continues the same wandb
      run (a sweep agent's own ``WANDB_RUN_ID`` wins); wandb's console output is off (``WANDB_SILENT=false`` turns
      it on), the summary says where its files are;
    - every run with a logger also logs to a :class:`~lightning.pytorch.loggers.CSVLogger` writing
      ``<run>/csv/metrics.csv`` (``<run>/csv-<time>/`` when the run directory already has one: a resumed run), unless
      the logger config already holds a CSVLogger; ``logger: false`` means no logger at all, CSV included;
    - :class:`callbacks.MetricCurves` draws ``<run>/curves.png`` from that CSV at the end of ``fit`` unless a
      ``MetricCurves`` is configured;
    - a ``checkpoint`` callback (:class:`callbacks.RunCheckpoint`), ``predict``'s :class:`callbacks.SampleWriter`,
      :class:`callbacks.SlurmRequeue` and a step-counting progress bar (:class:`callbacks.StepProgressBar`) are always
      present; a ``slurm`` section (:class:`lightning_ebm.slurm.SlurmJob`) holds ``submit``'s job settings and is
      ignored by the other subcommands;
    - hyper-parameters stored in a ``--ckpt_path`` checkpoint fill in the model's config, but values given in
      config files or on the command line win over them;
    - a refused input raises :class:`~lightning_ebm.errors.UsageError` (one line; the program exits with 2).
    """

    help_as: tuple[str, str] | None = None
    """``(prog, description)`` for the subcommands' help instead of Lightning's (``submit`` parses as ``fit``)."""

    _ckpt_method: str | None = None
    """The method (class path) that the ``--ckpt_path`` file records, if it records one."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        quiet()
        self._started = time.monotonic()
        super().__init__(
            EBMModule,
            LightningDataModule,
            save_config_callback=RunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={
                "default_root_dir": "runs",
                "logger": {
                    "class_path": "lightning.pytorch.loggers.WandbLogger",
                    "init_args": {"project": "lightning_ebm"},
                },
                "callbacks": [SampleWriter(), SlurmRequeue()],
            },
            parser_kwargs={
                **_PARSER_MODE,
                "prog": program(),
                **{sub: dict(_PARSER_MODE) for sub in SUBCOMMANDS},
            },
            parser_class=EBMArgumentParser,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The always-present checkpoint callback, ``submit``'s job settings and the data-to-model link."""
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 100})
        parser.add_class_arguments(SlurmJob, "slurm", instantiate=False)
        parser.link_arguments("data.sample_shape", "model.init_args.sample_shape", apply_on="instantiate")

    # ------------------------------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: LightningArgumentParser, args: Sequence[str] | None) -> None:
        """Parse; a ``--ckpt_path`` file on the command line first supplies defaults (see :meth:`_ckpt_defaults`).

        Bare recipe names are resolved (:mod:`lightning_ebm.recipes`), and values written by Python's ``str()`` (what
        a wandb sweep agent's ``${args}`` renders) mean what they meant to the agent: ``None`` is null and ``1e-05`` a
        float (YAML reads both as strings otherwise).
        """
        raw = command_line(sys.argv[1:] if args is None else args)
        subcommand = next((a for a in raw if a in SUBCOMMANDS), None)
        ckpt_path = flag_value(raw, "--ckpt_path")
        if subcommand and ckpt_path and ckpt_path not in CKPT_KEYWORDS:
            self._ckpt_defaults(subcommand, ckpt_path)
        try:
            self.config = parser.parse_args(raw)
        except Exception as err:
            if not type(err).__module__.startswith("omegaconf"):
                raise
            raise UsageError(_interpolation_error(err)) from err

    def _ckpt_defaults(self, subcommand: str, ckpt_path: str) -> None:
        """Use the checkpoint's model and data hyper-parameters as defaults under the user's configs and flags.

        So ``validate --ckpt_path FILE`` needs no config, and values given in config files or flags win over the
        checkpoint's. (Lightning's own ``_parse_ckpt_path`` puts the checkpoint's model values on top, silently
        dropping ``--model.*`` flags given with ``--ckpt_path``, such as a lowered step size after a divergence;
        it is turned off below.)
        """
        check_ckpt_path(ckpt_path)
        checkpoint = read_checkpoint(ckpt_path)
        defaults = {}
        for key, stored in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
            class_path, hparams = split_cli_hparams(checkpoint.get(stored) or {})
            hparams.pop("sample_shape", None)  # a link target: it comes from the data
            if class_path is not None:
                defaults[key] = {"class_path": class_path, "init_args": hparams}
        self._ckpt_method = defaults.get("model", {}).get("class_path")
        if defaults:
            subcommand_parsers(self)[subcommand].set_defaults(defaults)

    def _parse_ckpt_path(self) -> None:
        """Replaced by :meth:`_ckpt_defaults`, which gives the user's values precedence."""

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Lightning's parsers; with :attr:`help_as`, the subcommands' help names another program."""
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if self.help_as and add_subcommands:
            for parser in subcommand_parsers(self).values():
                parser.prog, parser.description = self.help_as

    def instantiate_classes(self) -> None:
        """Instantiate; an error raised by a class itself (a missing texture, a crop larger than the image) is a
        :class:`UsageError` with that class's message (jsonargparse wraps it in a union-type error that buries it)."""
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, NotADirectoryError) as err:
            # the outermost error that jsonargparse did not raise is the class's own, with the message it meant
            # (a deeper cause, such as Pillow's "image file is truncated", would lose the file's name)
            chain = [err]
            while chain[-1].__cause__ is not None and len(chain) < 50:
                chain.append(chain[-1].__cause__)
            for cause in chain:
                tb = cause.__traceback__
                while tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                raised_by_parser = tb is not None and "jsonargparse" in tb.tb_frame.f_code.co_filename
                if not raised_by_parser and not type(cause).__module__.startswith("jsonargparse"):
                    raise UsageError(str(cause)) from cause
            raise UsageError(condense(str(chain[-1]))) from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with a CSVLogger beside the configured loggers (:func:`with_csv_logger`),
        :class:`callbacks.MetricCurves` unless one is configured, and :class:`callbacks.StepProgressBar` unless progress
        bars are off or one is configured."""
        trainer = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        given = trainer.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if not any(isinstance(c, MetricCurves) for c in given):
            given = [*given, MetricCurves()]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            given = [*given, StepProgressBar()]
        trainer["callbacks"] = [SharedRunDirectory(), *given]
        trainer["logger"] = with_csv_logger(trainer.get("logger"), self.run_dir)
        trainer["plugins"] = with_atomic_checkpoints(trainer.get("plugins"), trainer.get("strategy"))
        interval = trainer.get("val_check_interval")
        if interval is not None and not isinstance(interval, bool) and interval <= 0:  # Lightning divides by it
            raise UsageError(
                f"--trainer.val_check_interval={interval}: must be above 0 (a fraction of an epoch, or a number of "
                "steps); to validate never, give --trainer.limit_val_batches=0"
            )
        try:
            built = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:
            raise UsageError(_trainer_error(err)) from err
        for logger in built.loggers:
            if isinstance(logger, WandbLogger):
                drop_wandb_anonymous(logger)
                Path(logger.save_dir).mkdir(parents=True, exist_ok=True)  # wandb looks for a git root there
        if self._launcher:  # everything is built: the run starts
            print(f"{program()} {self.subcommand}: run directory {self.run_dir}", file=sys.stderr, flush=True)
        return built

    # ------------------------------------------------------------------------------------- run directory
    def _recipe(self, config: Any) -> str:
        files, experiments = _config_files(config)
        if experiments or files:
            return (experiments or files)[-1].stem
        ckpt = Path(str(config.get("ckpt_path") or ""))
        if ckpt.is_file() and ckpt.parent.name == "checkpoints":  # <root>/<recipe>/<run>/checkpoints/FILE
            return ckpt.parent.parent.parent.name
        return str(config.model.class_path).rsplit(".", 1)[-1].lower()

    def _run_dir(self, config: Any) -> Path | None:
        """Where this run writes; the same for every process of one run (see :class:`EBMCLI`). A new directory is
        created here, atomically: runs started at the same moment each get their own. ``None``: this is a process of
        a launcher other than global rank zero, where the run needs a new directory; it takes rank zero's once the
        processes have met (:class:`callbacks.run_directory.SharedRunDirectory`)."""
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        root = Path(config.trainer.default_root_dir or "runs")
        recipe = self._recipe(config)
        ckpt = config.get("ckpt_path")
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        job = job if job and job != "none" else None
        new_dir = _new_dir if _rank_zero_process() else lambda parent, name: None
        if self.subcommand != "fit":
            if ckpt and Path(ckpt).is_file() and Path(ckpt).parent.name == "checkpoints":
                return new_dir(Path(ckpt).parent.parent, f"{self.subcommand}-{_stamp()}")
            return new_dir(root / recipe, f"{self.subcommand}-{_stamp()}")
        if ckpt == "last":
            saved = sorted(root.glob(f"{recipe}/*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
            if saved:
                return saved[-1].parent.parent
            warnings.warn(
                f"--ckpt_path last: no {root}/{recipe}/*/checkpoints/*.ckpt yet; starting a new run", stacklevel=2
            )
        elif ckpt and Path(ckpt).is_file() and Path(ckpt).parent.name == "checkpoints":
            return Path(ckpt).parent.parent  # a run's own checkpoint: the run continues in its directory
        if job:
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            return root / recipe / (f"job-{job}" + (f"-{task}" if task else ""))
        return new_dir(root / recipe, _stamp())

    def _resume_from(self, config: Any, run_dir: Path) -> None:
        """Before a resume in ``run_dir``: remove what interrupted saves left, and read ``--ckpt_path last`` as the
        newest checkpoint of the run that loads (``last.ckpt``, or a newer or intact periodic one)."""
        folder = run_dir / "checkpoints"
        remove_partial_saves(folder)
        if config.get("ckpt_path") != "last" or not folder.is_dir():
            return
        newest = newest_intact(folder)
        if newest is None:
            raise UsageError(
                f"--ckpt_path last: no checkpoint in {folder} can be read (all truncated or corrupt); start a new run "
                "without --ckpt_path, or give another run's checkpoint"
            )
        config.ckpt_path = str(newest)

    def before_instantiate_classes(self) -> None:
        """Point the trainer, the checkpoints and the loggers at the run directory, and say where it is."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        launcher = RUN_DIR_ENV not in os.environ and _rank_zero_process()
        asked = imported(str(config.model.class_path)) if config.get("model") else None
        if self._ckpt_method is not None and isinstance(asked, type):  # before any folder is made
            refuse_other_method(self._ckpt_method, asked, f"--ckpt_path {config.get('ckpt_path')}")
        try:
            run_dir = self._run_dir(config)
            if run_dir is not None:
                run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"--trainer.default_root_dir {config.trainer.default_root_dir}: cannot make the run directory "
                f"{err.filename or ''} ({err.strerror or err}): give a folder you can write to"
            ) from err
        if self.subcommand == "fit" and config.get("ckpt_path") and _rank_zero_process():
            self._resume_from(config, run_dir)
        if run_dir is None:  # rank zero's directory is given to this process in setup (SharedRunDirectory)
            self.run_dir = Path(config.trainer.default_root_dir or "runs")
            self._launcher = False
            return
        os.environ[RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        config.trainer.default_root_dir = str(run_dir)
        if config.get("checkpoint") is not None and not config.checkpoint.dirpath:
            config.checkpoint.dirpath = str(run_dir / "checkpoints")
        if self.subcommand != "fit":  # the checkpoint callback's saved state describes training, not this run
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used")
        elif config.get("ckpt_path"):  # a resumed run writes into its own checkpoint folder again
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if not hasattr(logger, "class_path"):
                continue
            init = logger.init_args
            if init.get("save_dir") in (None, ".", "./"):
                init.save_dir = str(run_dir)
            if logger.class_path.endswith("WandbLogger"):
                init.name = init.get("name") or f"{run_dir.parent.name}/{run_dir.name}"
                if not init.get("id") and "WANDB_RUN_ID" not in os.environ and self.subcommand == "fit":
                    init.id = wandb_run_id(run_dir)
                    init.resume = init.get("resume") or "allow"
                if "WANDB_MODE" not in os.environ and not init.get("offline") and not _wandb_logged_in():
                    os.environ["WANDB_MODE"] = "offline"
                # wandb's banner and a warning about an argument Lightning always passes; the summary says where
                # the run's files are instead
                os.environ.setdefault("WANDB_SILENT", "true")
        self._launcher = launcher

    # ------------------------------------------------------------------------------------------ summary
    def _summary(self) -> None:
        """Where the run's samples, checkpoint and config are, and the commands that continue or evaluate it."""
        if not (self.trainer.is_global_zero and _rank_zero_process()):
            return
        run, prog = self.run_dir, program()
        minutes, seconds = divmod(int(time.monotonic() - self._started), 60)
        step = self.trainer.global_step
        if self.subcommand != "fit":  # the trainer's step is 0 here: say which checkpoint was evaluated
            step = getattr(self.model, "checkpoint_step", None)
        where = f", step {step}" if self.subcommand == "fit" else f", the checkpoint of step {step}" if step else ""
        lines = [f"{prog} {self.subcommand}: done in {minutes} min {seconds:02d} s{where}"]

        def newest(pattern: str, where: Path = run) -> Path | None:
            found = sorted(where.glob(pattern), key=os.path.getmtime)
            return found[-1] if found else None

        last = run / "checkpoints" / "last.ckpt"
        csv_logger = next((lg for lg in self.trainer.loggers if isinstance(lg, CSVLogger)), None)
        metrics = None if csv_logger is None else Path(csv_logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        entries = [
            ("samples", newest("samples/*.png") or newest("predictions/grid_rank0.png") or newest("*/*.png")),
            ("checkpoint", last if last.is_file() else None),
            ("config", run / "config.yaml" if (run / "config.yaml").is_file() else None),
            ("metrics", metrics if metrics is not None and metrics.is_file() else None),
            ("curves", run / "curves.png" if (run / "curves.png").is_file() else None),
            ("wandb", newest("wandb/offline-run-*")),
        ]
        lines += [f"  {name:<11}{path}" for name, path in entries if path is not None]
        wandb_dir = entries[-1][1]
        if wandb_dir is not None:
            lines.append(f"  {'':<11}upload it with: wandb sync {wandb_dir}")
        if self.subcommand == "fit" and last.is_file():
            recipe = self._recipe_option()
            again = f" --config {recipe}" if recipe else ""
            # the run's own config brings its callbacks (SampleQuality's scores) and exactly its data settings
            lines.append(f"  {'evaluate':<11}{prog} validate --config {run / 'config.yaml'} --ckpt_path {last}")
            more = 2 * self.trainer.global_step
            lines.append(f"  {'continue':<11}{prog} fit{again} --ckpt_path {last} --trainer.max_steps={more}")
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _recipe_option(self) -> str | None:
        """This run's recipe as ``--config`` takes it in the commands the summary prints: its name if shipped."""
        _, experiments = _config_files(self.config[self.subcommand])
        if not experiments:
            return None
        path = experiments[-1]
        shipped = recipes.CONF / "experiments" / path.name
        return path.stem if shipped.is_file() and shipped.samefile(path) else str(path)

    def after_fit(self) -> None:
        """The summary."""
        self._summary()

    after_validate = after_test = after_predict = after_fit


def _interpolation_error(err: Exception) -> str:
    """One line for an omegaconf error in a config's ``${...}`` interpolation, naming the option it sets."""
    key = str(getattr(err, "full_key", "") or "")
    key = re.sub(r"\.init_args\b", "", key.split(".", 1)[1] if key.split(".", 1)[0] in SUBCOMMANDS else key)
    message = str(getattr(err, "msg", "") or err).strip().splitlines()[0]
    return f"--{key}: {message}; fix that ${{...}} interpolation in the config" if key else f"{message} (a config)"


def _trainer_error(err: Exception) -> str:
    """One line for a Trainer setting that Lightning refuses (``MisconfigurationException``)."""
    message = str(err).strip().splitlines()[0]
    if "gpu backend" in message.lower() or "accelerator is not available" in message:
        message += " (torch here sees no GPU: give --trainer.accelerator=cpu, or auto)"
    return f"the trainer settings: {message}"


def run(args: Sequence[str] | None = None) -> EBMCLI:
    """Run ``fit``, ``validate``, ``test`` or ``predict`` from a command line (``None``: ``sys.argv``); the CLI object
    holds the trainer, model and data afterwards (for tests and notebooks)."""
    inherited = RUN_DIR_ENV in os.environ  # set by the launching process of a DDP run
    failed, refused = True, None
    try:
        cli = EBMCLI(args=args)
        failed = False
        return cli
    except UsageError:  # refused once the run had started (too many samples asked for, no held-out data)
        refused = None if inherited else os.environ.get(RUN_DIR_ENV)
        raise
    except MisconfigurationException as err:  # a setting Lightning refuses once the run has started
        refused = None if inherited else os.environ.get(RUN_DIR_ENV)
        raise UsageError(_trainer_error(err)) from err
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)
        _finish_wandb(failed)
        if refused and _rank_zero_process():
            _remove_unless_checkpointed(Path(refused))


def _remove_unless_checkpointed(run_dir: Path) -> None:
    """Remove the run directory of a refused command, unless it holds a checkpoint (a resumed run's own folder), and
    the recipe and root folders above it if that leaves them empty."""
    if run_dir.is_dir() and not any((run_dir / "checkpoints").glob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):
            try:
                parent.rmdir()  # only an empty folder
            except OSError:
                break


def _finish_wandb(failed: bool) -> None:
    """Close the wandb run this process opened: Lightning leaves it open, and a failed run would otherwise
    swallow the next run started in the same process (a notebook, a sweep agent running in-process)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
