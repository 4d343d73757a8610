"""``EBMCLI``: LightningCLI with the project's links, defaults and run directories. No training logic here."""

import netrc
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import callbacks  # noqa: F401  (registers the callback classes for short names in configs)
import datamodules  # noqa: F401  (registers the DataModules for ``--data TextureDataModule``)
import lightning_ebm.methods  # noqa: F401  (registers the methods for ``--model GenerativeConvNet``)
from callbacks import RunCheckpoint, SampleWriter
from lightning_ebm.methods.base import EBMModule

RUN_DIR_ENV = "LIGHTNING_EBM_RUN_DIR"
"""Environment variable holding the run directory, so that DDP worker processes write into the same one."""

_PARSER_MODE = {"parser_mode": "omegaconf+"}


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _wandb_logged_in() -> bool:
    """Whether wandb has credentials here (``WANDB_API_KEY`` or a netrc entry written by ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in command-line ``args`` (``--flag value`` or ``--flag=value``), if given."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


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
            path = run_dir / f"config-{stage}-{_stamp()}.yaml"
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
                logger.experiment.config.update(config, allow_val_change=True)


class EBMCLI(LightningCLI):
    """The command line of ``python -m lightning_ebm``.

    - every method (``lightning_ebm.methods``) and DataModule (``datamodules``) is selectable by class path or
      name; the DataModule's ``sample_shape`` is linked into the model;
    - configs are parsed in jsonargparse's ``omegaconf+`` mode: ``${.key}`` interpolations resolve after
      command-line overrides, so one override reaches every use;
    - every run writes everything (resolved config, ``checkpoints/`` with ``last.ckpt``, samples, logger files)
      under one run directory ``<trainer.default_root_dir>/<recipe>/<time>``; ``fit --ckpt_path last`` continues the
      newest run of the recipe in its own directory, and ``validate``/``test``/``predict --ckpt_path FILE`` write into
      ``<run of FILE>/<subcommand>-<time>``;
    - the default logger is wandb, offline unless wandb has credentials on this machine (set ``WANDB_MODE`` to
      override); a ``checkpoint`` callback (:class:`callbacks.RunCheckpoint`) and ``predict``'s
      :class:`callbacks.SampleWriter` are always present;
    - hyper-parameters stored in a ``--ckpt_path`` checkpoint fill in the model's config, but values given in
      config files or on the command line win over them.
    """

    def __init__(self, args: Any = None, run: bool = True) -> None:
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
                "callbacks": [SampleWriter()],
            },
            parser_kwargs={
                **_PARSER_MODE,
                **{sub: dict(_PARSER_MODE) for sub in ("fit", "validate", "test", "predict")},
            },
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The always-present checkpoint callback and the data-to-model link."""
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 100})
        parser.link_arguments("data.sample_shape", "model.init_args.sample_shape", apply_on="instantiate")

    # ------------------------------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; a ``--ckpt_path`` file on the command line first supplies defaults (see :meth:`_ckpt_defaults`)."""
        raw = sys.argv[1:] if args is None else args
        self._raw_args = raw
        if isinstance(raw, (list, tuple)):
            subcommand = next((a for a in raw if a in self._subcommand_parsers), None)
            ckpt_path = _flag_value(raw, "--ckpt_path")
            if subcommand and ckpt_path:
                self._ckpt_defaults(subcommand, ckpt_path)
        super().parse_arguments(parser, args)

    def _ckpt_defaults(self, subcommand: str, ckpt_path: str) -> None:
        """Use the checkpoint's model and data hyper-parameters as defaults under the user's configs and flags.

        So ``validate --ckpt_path FILE`` needs no config, and values given in config files or flags win over the
        checkpoint's. (Lightning's own ``_parse_ckpt_path`` puts the checkpoint's model values on top, silently
        dropping ``--model.*`` flags given with ``--ckpt_path``, such as a lowered step size after a divergence;
        it is turned off below.)
        """
        if not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        defaults = {}
        for key, stored in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
            hparams = dict(checkpoint.get(stored) or {})
            hparams.pop("_instantiator", None)
            hparams.pop("sample_shape", None)  # a link target: it comes from the data
            class_path = hparams.pop("_class_path", None)
            if class_path is not None:
                defaults[key] = {"class_path": class_path, "init_args": hparams}
        if defaults:
            self._subcommand_parsers[subcommand].set_defaults(defaults)

    def _parse_ckpt_path(self) -> None:
        """Replaced by :meth:`_ckpt_defaults`, which gives the user's values precedence."""

    def instantiate_classes(self) -> None:
        """Instantiate; an error raised by a class itself (a missing texture, say) surfaces as that error.

        jsonargparse wraps it in a union-type error whose text buries the message.
        """
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            tb = cause.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if cause is err or tb is None or "jsonargparse" in tb.tb_frame.f_code.co_filename:
                raise
            raise cause.with_traceback(cause.__traceback__) from None

    # ------------------------------------------------------------------------------------- run directory
    def _recipe(self, config: Any) -> str:
        files = [Path(str(p)) for p in (config.get("config") or [])]
        experiments = [p for p in files if p.parent.name == "experiments"]
        if experiments or files:
            return (experiments or files)[-1].stem
        ckpt = Path(str(config.get("ckpt_path") or ""))
        if ckpt.is_file() and ckpt.parent.name == "checkpoints":  # <root>/<recipe>/<run>/checkpoints/FILE
            return ckpt.parent.parent.parent.name
        return str(config.model.class_path).rsplit(".", 1)[-1].lower()

    def _run_dir(self, config: Any) -> Path:
        """Where this run writes; the same for every process of one run (see :class:`EBMCLI`)."""
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        root = Path(config.trainer.default_root_dir or "runs")
        recipe = self._recipe(config)
        ckpt = config.get("ckpt_path")
        if self.subcommand != "fit":
            if ckpt and Path(ckpt).is_file() and Path(ckpt).parent.name == "checkpoints":
                return Path(ckpt).parent.parent / f"{self.subcommand}-{_stamp()}"
            return root / recipe / f"{self.subcommand}-{_stamp()}"
        if ckpt == "last":
            lasts = sorted(root.glob(f"{recipe}/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            if lasts:
                return lasts[-1].parent.parent
            warnings.warn(
                f"--ckpt_path last: no {root}/{recipe}/*/checkpoints/last.ckpt yet; starting a new run",
                stacklevel=2,
            )
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if job and job != "none":
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            return root / recipe / (f"job-{job}" + (f"-{task}" if task else ""))
        run_dir = root / recipe / _stamp()
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = root / recipe / f"{_stamp()}-{suffix}"
        return run_dir

    def before_instantiate_classes(self) -> None:
        """Point the trainer, the checkpoints and the loggers at the run directory."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = self._run_dir(config)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        config.trainer.default_root_dir = str(run_dir)
        if config.get("checkpoint") is not None and not config.checkpoint.dirpath:
            config.checkpoint.dirpath = str(run_dir / "checkpoints")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if not hasattr(logger, "class_path"):
                continue
            init = logger.init_args
            if init.get("save_dir") in (None, ".", "./"):
                init.save_dir = str(run_dir)
            if logger.class_path.endswith("WandbLogger"):
                init.name = init.get("name") or f"{run_dir.parent.name}/{run_dir.name}"
                if "WANDB_MODE" not in os.environ and not init.get("offline") and not _wandb_logged_in():
                    os.environ["WANDB_MODE"] = "offline"


# ------------------------------------------------------------------------------------------------ visualize
def load_model(ckpt_path: str | Path) -> EBMModule:
    """The method a checkpoint of this framework holds (its class is recorded in the checkpoint), on the CPU."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: give a .ckpt file (a run's checkpoints/last.ckpt)")
    hparams = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters") or {}
    class_path = hparams.get("_class_path")
    if class_path is None:
        raise ValueError(f"{path} does not say which method wrote it (no _class_path): not a lightning_ebm checkpoint?")
    module, _, name = class_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return cls.load_from_checkpoint(path, map_location="cpu")


def visualize_main(args: list[str]) -> Path:
    """``python -m lightning_ebm visualize --ckpt_path CKPT --node NODE``: sample a node and write a grid.

    Generative visualisation (Dai, Lu and Wu, ICLR 2015): samples ``p(x) ∝ exp(f_node(x)) N(x; 0, σ² I)`` by HMC
    (or Langevin) from N(0, σ² I) starts, for any node of a trained classifier or descriptor (``lightning_ebm.nodes``;
    ``--node list`` prints them). σ and the step sizes default to the model's own sampler settings.
    """
    import argparse

    from callbacks.images import make_grid, save_png, to_uint8
    from lightning_ebm.mixins import AcceptanceTracker
    from lightning_ebm.nodes import describe_nodes, node_function
    from lightning_ebm.samplers import hmc, langevin

    parser = argparse.ArgumentParser(prog="python -m lightning_ebm visualize", description=visualize_main.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of any method")
    parser.add_argument("--node", default="score", help="score, class:<k>, layer:<module>:<channel>, or list")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--sampler", choices=["hmc", "langevin"], default="hmc")
    parser.add_argument("--steps", type=int, default=None, help="HMC iterations or Langevin steps (default 100)")
    parser.add_argument("--sigma", type=float, default=None, help="σ of the reference (default: the model's)")
    parser.add_argument("--step_size", type=float, default=None, help="initial HMC ε or Langevin δ")
    parser.add_argument("--leapfrog_steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="PNG path (default: <run>/visualize/<node>.png)")
    opts = parser.parse_args(args)
    model = load_model(opts.ckpt_path).eval()
    if opts.node == "list":
        print(describe_nodes(model))
        return Path(opts.ckpt_path)
    f, shape = node_function(model, opts.node)
    hp = model.hparams
    own = ("hmc_sigma", "langevin_sigma") if opts.sampler == "hmc" else ("langevin_sigma", "hmc_sigma")
    sigma = opts.sigma or hp.get(own[0]) or hp.get(own[1]) or 1.0
    g = torch.Generator().manual_seed(opts.seed)
    x0 = sigma * torch.randn((opts.n, *shape), generator=g)
    steps = opts.steps or 100
    tracker = AcceptanceTracker()
    for p in model.parameters():
        p.requires_grad_(False)
    if opts.sampler == "hmc":
        eps = opts.step_size or hp.get("hmc_step_size") or 0.1 * sigma
        x = hmc(f, x0, n_steps=steps, step_size=eps, leapfrog_steps=opts.leapfrog_steps, sigma=sigma, generator=g,
                callback=tracker)  # fmt: skip
        report = f"HMC acceptance {tracker.accept_prob:.2f} at mean step size {tracker.step_size:.3g}"
    else:
        delta = opts.step_size or hp.get("langevin_step_size") or 0.1 * sigma
        x = langevin(f, x0, n_steps=steps, step_size=delta, sigma=sigma, generator=g)
        report = f"Langevin step size {delta:.3g}"
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"the chains of node {opts.node} diverged: lower --step_size or --sigma")
    ckpt = Path(opts.ckpt_path)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(opts.out) if opts.out else run / "visualize" / f"{opts.node.replace(':', '-')}.png"
    save_png(make_grid(to_uint8(x.clamp(-1, 1)) if x.dim() == 4 else to_uint8(x[:, :, None])), out)
    with torch.no_grad():
        values = f(x)
    print(f"{opts.n} samples of node {opts.node} (σ = {sigma:.3g}, {steps} steps; {report}); f_node mean "
          f"{values.mean().item():.3g} → {out}")  # fmt: skip
    return out
