"""``EBMCLI``: LightningCLI with the project's links, defaults and run directories. No training logic here."""

import hashlib
import netrc
import os
import re
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
from callbacks import RunCheckpoint, SampleWriter, SlurmRequeue
from lightning_ebm.methods.base import EBMModule

RUN_DIR_ENV = "LIGHTNING_EBM_RUN_DIR"
"""Environment variable holding the run directory, so that DDP worker processes write into the same one."""

_PARSER_MODE = {"parser_mode": "omegaconf+"}


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


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


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in command-line ``args`` (``--flag value`` or ``--flag=value``), if given."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


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
      override), with a run id derived from the run directory, so a resumed or requeued run continues the same wandb
      run (a sweep agent's own ``WANDB_RUN_ID`` wins); a ``checkpoint`` callback (:class:`callbacks.RunCheckpoint`),
      ``predict``'s :class:`callbacks.SampleWriter` and :class:`callbacks.SlurmRequeue` are always present;
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
                "callbacks": [SampleWriter(), SlurmRequeue()],
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
        """Parse; a ``--ckpt_path`` file on the command line first supplies defaults (see :meth:`_ckpt_defaults`).

        Values written by Python's ``str()`` (what a wandb sweep agent's ``${args}`` renders) mean what they meant
        to the agent: ``None`` is null and ``1e-05`` a float (YAML reads both as strings otherwise).
        """
        raw = sys.argv[1:] if args is None else args
        if isinstance(raw, (list, tuple)):
            raw = [_python_value(a) for a in raw]
            args = raw
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
                if not init.get("id") and "WANDB_RUN_ID" not in os.environ and self.subcommand == "fit":
                    init.id = wandb_run_id(run_dir)
                    init.resume = init.get("resume") or "allow"
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


# --------------------------------------------------------------------------------------------------- submit
SLURM_TEMPLATE = Path(__file__).resolve().parents[1] / "conf" / "slurm" / "job.sbatch"
SLURM_PRESET = Path(__file__).resolve().parents[1] / "conf" / "trainer" / "slurm.yaml"


def submit_main(args: list[str]) -> str:
    """``python -m lightning_ebm submit --config RECIPE [fit flags] --nodes N --gpus-per-node G --time T [...]``.

    Renders the sbatch script of a ``fit`` run (``conf/slurm/job.sbatch``: one task per device through ``srun``,
    ``--signal=SIGUSR1@90`` and ``--requeue`` for :class:`callbacks.SlurmRequeue`, a new run directory for the job
    with its SLURM log inside), writes it as ``<run>/job.sbatch`` and submits it with ``sbatch``; ``--dry-run`` only
    prints it. Flags it does not know go to ``fit``, which parses them here first, so a typo fails before anything
    is queued. Returns the job id (``--dry-run``: the script).
    """
    import argparse
    import contextlib
    import io
    import shlex
    import shutil
    import string
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m lightning_ebm submit", description=submit_main.__doc__)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0, help="0: CPU processes (gloo)")
    parser.add_argument("--tasks-per-node", type=int, default=None, help="default: gpus-per-node, or 1 on CPUs")
    parser.add_argument("--cpus-per-task", type=int, default=4, help="data-loading workers need cores too")
    parser.add_argument("--time", default="24:00:00", help="the job's time limit, as sbatch takes it")
    parser.add_argument("--job-name", default=None, help="default: the recipe's name")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--mem", default=None, help="per node, as sbatch takes it (16G)")
    parser.add_argument(
        "--sbatch", action="append", default=[], help="any other sbatch option, e.g. --sbatch=--qos=high"
    )
    parser.add_argument("--root", default="runs", help="the run directory goes under <root>/<recipe>/")
    parser.add_argument("--template", default=str(SLURM_TEMPLATE))
    parser.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    opts, fit_args = parser.parse_known_args(args)
    if _flag_value(fit_args, "--config") is None:
        parser.error("submit needs the recipe of the run: --config conf/experiments/<recipe>.yaml")
    tasks = opts.tasks_per_node or max(opts.gpus_per_node, 1)
    if opts.nodes < 1 or tasks < 1 or (opts.gpus_per_node and tasks != opts.gpus_per_node):
        parser.error(
            f"--nodes {opts.nodes}, --tasks-per-node {tasks}, --gpus-per-node {opts.gpus_per_node}: Lightning needs "
            "one task per GPU (leave --tasks-per-node out with GPUs)"
        )
    fit_args = [
        *fit_args,
        "--config",
        str(SLURM_PRESET),
        f"--trainer.num_nodes={opts.nodes}",
        f"--trainer.devices={tasks}",
        f"--trainer.accelerator={'gpu' if opts.gpus_per_node else 'cpu'}",
    ]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # fails now on a wrong flag
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            from lightning_ebm.__main__ import cli_main

            cli_main(["fit", *fit_args, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    configs = [Path(fit_args[i + 1]) for i, a in enumerate(fit_args[:-1]) if a == "--config"]
    recipe = next((p.stem for p in reversed(configs) if p.parent.name == "experiments"), configs[0].stem)
    run_dir = (Path(opts.root) / recipe / _stamp()).resolve()
    while run_dir.exists():
        run_dir = run_dir.with_name(run_dir.name + "-1")
    lines = [f"#SBATCH --gpus-per-node={opts.gpus_per_node}"] if opts.gpus_per_node else []
    for key in ("partition", "account", "mem"):
        if getattr(opts, key):
            lines.append(f"#SBATCH --{key}={getattr(opts, key)}")
    lines += [f"#SBATCH {option}" for option in opts.sbatch]
    script = string.Template(Path(opts.template).read_text()).substitute(
        stamp=_stamp(),
        script=shlex.quote(str(run_dir / "job.sbatch")),
        job_name=opts.job_name or recipe,
        nodes=opts.nodes,
        tasks_per_node=tasks,
        cpus_per_task=opts.cpus_per_task,
        time=opts.time,
        run_dir=shlex.quote(str(run_dir)),
        sbatch_lines="\n".join(lines),
        workdir=shlex.quote(os.getcwd()),
        python=shlex.quote(sys.executable),
        fit_args=" ".join(shlex.quote(a) for a in fit_args),
    )
    if opts.dry_run:
        print(script)
        return script
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(
            "sbatch is not on this machine's PATH: run submit on a SLURM login node, or add --dry-run to see the script"
        )
    run_dir.mkdir(parents=True)
    path = run_dir / "job.sbatch"
    path.write_text(script)
    result = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sbatch refused {path}: {result.stderr.strip()}")
    job = result.stdout.strip().split(";")[0]
    print(f"submitted job {job}: run directory {run_dir}, SLURM log {run_dir / f'slurm-{job}.out'}")
    return job
