"""``submit``: run a ``fit`` as a SLURM job that checkpoints and requeues itself at its time limit.

``submit`` takes everything ``fit`` takes (recipes, presets, overrides), plus the job's settings: the ``slurm:``
section of a config file or ``--slurm.<name>`` flags (:class:`SlurmJob`; ``fit`` ignores them). It parses the whole
command line first, so a typo fails before anything is queued, renders the job script from the shipped template
(``conf/slurm/job.sbatch``), writes it into a new run directory as ``job.sbatch`` and hands it to ``sbatch``.
"""

import os
import shlex
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_ebm import recipes
from lightning_ebm.argv import flag_value, precheck, program
from lightning_ebm.errors import UsageError

TEMPLATE = recipes.CONF / "slurm" / "job.sbatch"
PRESET = recipes.CONF / "trainer" / "slurm.yaml"


@dataclass
class SlurmJob:
    """The SLURM job of a run (``submit``); ``fit`` ignores these settings.

    Args:
        nodes: nodes of the job (``trainer.num_nodes``).
        gpus_per_node: GPUs per node, one process each (``trainer.devices``); 0 runs CPU processes with gloo.
        tasks_per_node: processes per node; default: ``gpus_per_node``, or 1 on CPUs.
        cpus_per_task: cores per process (data-loading workers need cores too).
        time: the job's time limit, as sbatch takes it (``24:00:00``, ``2-00:00:00``).
        job_name: the job's name; default: the recipe's name.
        partition: the partition to submit to; default: the cluster's.
        account: the account to charge; default: yours.
        mem: memory per node, as sbatch takes it (``64G``); default: the cluster's.
        sbatch: any other sbatch options, each as one string (``--qos=high``, ``--gres=gpu:4``).
        template: the job script template; default: the shipped ``conf/slurm/job.sbatch``.
    """

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 4
    time: str = "24:00:00"
    job_name: str | None = None
    partition: str | None = None
    account: str | None = None
    mem: str | None = None
    sbatch: list[str] = field(default_factory=list)
    template: str | None = None


# The flags of earlier versions, and the short forms the README shows: ``--nodes 2`` is ``--slurm.nodes 2``.
ALIASES = {f"--{name.replace('_', '-')}": f"--slurm.{name}" for name in SlurmJob.__dataclass_fields__}
ALIASES["--root"] = "--trainer.default_root_dir"

DESCRIPTION = """Run a fit as a SLURM job: every option of fit, plus the job's settings (--slurm.* or a slurm: section
in a config file; --nodes, --gpus-per-node, --time, --partition, ... are short for --slurm.nodes, ...). The job
runs one process per GPU through srun, checkpoints and requeues itself 90 s before its time limit, and writes
into a new run directory <root>/<recipe>/<time>/ that holds the script (job.sbatch) and the SLURM log.
--dry-run prints the script and submits nothing."""


def _aliased(args: Sequence[str]) -> list[str]:
    out = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        plus = "+" if flag.endswith("+") else ""  # a list's append: --sbatch+=--qos=high
        name = flag.removesuffix("+")
        out.append(ALIASES[name] + plus + eq + value if name in ALIASES else arg)
    return out


def _created(path: Path) -> list[Path]:
    """The folders that ``mkdir(parents=True)`` of ``path`` creates, innermost first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def submit(args: Sequence[str]) -> str:
    """``submit [fit options] [--slurm.* | --nodes ...] [--dry-run]``: write the job script and ``sbatch`` it.

    Returns the job id, or the script with ``--dry-run``.

    Raises:
        UsageError: no recipe, an option fit refuses, a job shape Lightning cannot run, no ``sbatch``, or sbatch
            refusing the job (then nothing is left behind).
    """
    args = _aliased(args)
    dry_run = any(a in ("--dry-run", "--dry_run") for a in args)
    args = [a for a in args if a not in ("--dry-run", "--dry_run")]
    precheck("submit", args)  # before importing torch: refused at once
    from lightning_ebm.cli import EBMCLI, command_line

    fit_args = command_line(args)
    job = _parse(EBMCLI, fit_args, program())
    tasks = job.get("tasks_per_node") or max(job.gpus_per_node, 1)
    if job.nodes < 1 or tasks < 1 or (job.gpus_per_node and tasks != job.gpus_per_node):
        raise UsageError(
            f"--slurm.nodes {job.nodes}, --slurm.tasks_per_node {tasks}, --slurm.gpus_per_node {job.gpus_per_node}: "
            "Lightning runs one process per GPU (leave --slurm.tasks_per_node out when you ask for GPUs)"
        )
    fit_args += [
        "--config",
        str(PRESET),
        f"--trainer.num_nodes={job.nodes}",
        f"--trainer.devices={tasks}",
        f"--trainer.accelerator={'gpu' if job.gpus_per_node else 'cpu'}",
    ]
    configs = [Path(fit_args[i + 1]) for i, a in enumerate(fit_args[:-1]) if a == "--config"]
    configs += [Path(a.split("=", 1)[1]) for a in fit_args if a.startswith("--config=")]
    recipe = next((p.stem for p in reversed(configs) if p.parent.name == "experiments"), configs[0].stem)
    root = Path(flag_value(fit_args, "--trainer.default_root_dir") or job.root or "runs")
    run_dir = (root / recipe / time.strftime("%Y%m%d-%H%M%S")).resolve()
    while run_dir.exists():
        run_dir = run_dir.with_name(run_dir.name + "-1")
    lines = [f"#SBATCH --gpus-per-node={job.gpus_per_node}"] if job.gpus_per_node else []
    lines += [f"#SBATCH --{key}={job[key]}" for key in ("partition", "account", "mem") if job.get(key)]
    lines += [f"#SBATCH {option}" for option in job.sbatch or []]
    template = Path(job.template) if job.get("template") else TEMPLATE
    if not template.is_file():
        raise UsageError(f"--slurm.template {template}: no such file")
    script = string.Template(template.read_text()).substitute(
        stamp=time.strftime("%Y%m%d-%H%M%S"),
        prog=program(),
        script=shlex.quote(str(run_dir / "job.sbatch")),
        job_name=job.get("job_name") or recipe,
        nodes=job.nodes,
        tasks_per_node=tasks,
        cpus_per_task=job.cpus_per_task,
        time=job.time,
        run_dir=shlex.quote(str(run_dir)),
        sbatch_lines="\n".join(lines),
        workdir=shlex.quote(os.getcwd()),
        python=shlex.quote(sys.executable),
        fit_args=" ".join(shlex.quote(a) for a in fit_args),
    )
    if dry_run:
        print(script)
        return script
    if shutil.which("sbatch") is None:
        raise UsageError(
            "sbatch is not on this machine's PATH: run submit on a SLURM login node, or add --dry-run to see the script"
        )
    created = _created(run_dir)
    run_dir.mkdir(parents=True)
    path = run_dir / "job.sbatch"
    path.write_text(script)
    try:
        result = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=60)
        refusal = result.stderr.strip() if result.returncode != 0 else None
    except subprocess.TimeoutExpired:
        refusal = "no answer in 60 s"
    if refusal is not None:
        path.unlink()
        for folder in created:
            folder.rmdir()
        raise UsageError(_refusal(refusal))
    job_id = result.stdout.strip().split(";")[0]
    print(f"submitted job {job_id}: run directory {run_dir}, SLURM log {run_dir / f'slurm-{job_id}.out'}")
    return job_id


def _refusal(stderr: str) -> str:
    """One line for sbatch's refusal: a controller it cannot reach, or sbatch's own last line."""
    last = stderr.splitlines()[-1] if stderr else "no message"
    unreachable = ("Unable to contact slurm controller", "Could not establish a configuration source", "resolve")
    if any(text in stderr for text in unreachable):
        return (
            f"sbatch cannot reach a SLURM controller from here ({last}): run submit on the cluster's login node, or "
            "add --dry-run to see the script"
        )
    return f"sbatch refused the job: {last}"


def _parse(cli_class: Any, fit_args: list[str], prog: str) -> Any:
    """The ``slurm`` section (and ``trainer.default_root_dir`` as ``root``) of ``fit``'s config for ``fit_args``;
    ``--help`` and ``--print_config`` print and exit here."""

    class _Parsed(Exception):
        pass

    class ParseOnly(cli_class):
        help_as = (f"{prog} submit", DESCRIPTION)

        def parse_arguments(self, parser: Any, args: Any) -> None:
            super().parse_arguments(parser, args)
            raise _Parsed(self.config)

    try:
        ParseOnly(["fit", *fit_args])
    except _Parsed as parsed:
        config = parsed.args[0].fit
        job = config.slurm
        job.root = config.trainer.default_root_dir
        return job
    raise AssertionError("unreachable: parsing ends in _Parsed or SystemExit")
