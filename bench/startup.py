"""Start-up time of the command line, each figure the minimum of ``runs`` fresh processes.

    python bench/startup.py [--runs 3]
    python bench/startup.py --phases        # where the main job's start-up goes, phase by phase

Prints a markdown table (it writes no file; ``bench/speed.py`` owns ``bench/RESULTS.md`` and can call
:func:`measure` and :func:`phases`):

- ``import torch``: ``python -c "import torch"``, the floor any PyTorch program pays;
- ``lightning-ebm --help``: the program's help (answers without importing torch);
- ``fit`` to the first step: ``lightning-ebm fit --config texture --config timing --trainer.max_steps=1`` (the main
  job, its wandb logger on as the recipe has it, ``WANDB_MODE=offline``), from the start of the process to the start
  of the first training step, as :class:`callbacks.IterationTimer` reads it from ``/proc`` (Linux only): imports,
  parsing the config, building the data, the model and the trainer, starting wandb, the sanity check and the
  callbacks' start (the step-0 sample grid).

Each row also gives its ratio to the ``import torch`` floor. Other processes on the machine inflate every figure; the
minimum of several runs is the least disturbed one.

``--phases`` splits the ``fit`` row: one fresh process runs the same command in-process and notes the seconds since
its start at each boundary: ``import torch``, ``import lightning.pytorch`` (which imports torchmetrics, and with it
scipy.signal when scipy is installed, and torch._dynamo), ``import lightning_ebm.cli`` (the project's modules),
``Trainer.fit`` entered (the config parsed and validated, the data, model and trainer built), the callbacks' ``setup``
(Lightning starts the loggers just before it: wandb), the sanity check, ``on_train_start`` (the step-0 sample grid is
drawn there) and the first training batch.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_STEP = re.compile(r"the first step began ([\d.]+) s after the process started")


def _program() -> list[str]:
    """The console script beside this interpreter, or ``python -m lightning_ebm``."""
    script = Path(sys.executable).with_name("lightning-ebm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lightning_ebm"]


def _wall(command: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall seconds of one run of ``command``, from before the process is started until it has exited."""
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _first_step(command: list[str], env: dict[str, str], cwd: str) -> float | None:
    """Seconds from the start of the ``fit`` process to its first training step, from IterationTimer's summary."""
    done = subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    found = FIRST_STEP.search(done.stderr)
    return float(found.group(1)) if found else None


def measure(runs: int = 3) -> list[dict]:
    """The three start-up figures, each the minimum of ``runs`` fresh processes.

    Returns:
        One dict per row: ``what`` (the row's name), ``command`` (as typed), ``seconds`` (the minimum, ``None``
        when it could not be read: the first step outside Linux), ``runs`` (every run's seconds) and
        ``vs_import_torch`` (``seconds`` over the ``import torch`` row's).
    """
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    program = _program()
    fit = ["fit", "--config", "texture", "--config", "timing", "--trainer.max_steps=1"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_ebm_startup_") as tmp:
        cases = [
            (
                "import torch",
                "python -c 'import torch'",
                lambda: _wall([sys.executable, "-c", "import torch"], env, tmp),
            ),
            ("--help", "lightning-ebm --help", lambda: _wall([*program, "--help"], env, tmp)),
            (
                "fit, to the first training step",
                "lightning-ebm " + " ".join(fit),
                lambda: _first_step([*program, *fit, f"--trainer.default_root_dir={tmp}/runs"], env, tmp),
            ),
        ]
        for what, typed, run in cases:
            seconds = [run() for _ in range(runs)]
            read = [s for s in seconds if s is not None]
            rows.append({"what": what, "command": typed, "seconds": min(read) if read else None, "runs": seconds})
    floor = rows[0]["seconds"]
    for row in rows:
        row["vs_import_torch"] = None if row["seconds"] is None or not floor else row["seconds"] / floor
    return rows


PHASE_MARK = "startup-phase"


def _phase_child(args: list[str]) -> None:
    """In a fresh process: import what ``fit`` imports, then run ``fit`` with a callback that prints, at each
    boundary, ``startup-phase <seconds since the process started> <name>`` on stderr (then stops the fit)."""
    sys.path.insert(0, str(ROOT))
    from lightning_ebm.process_clock import seconds_since_process_start as now

    def mark(name: str) -> None:
        print(f"{PHASE_MARK} {now():.3f} {name}", file=sys.stderr, flush=True)

    mark("the interpreter ran this script")
    import torch  # noqa: F401

    mark("import torch")
    import lightning.pytorch as pl

    mark("import lightning.pytorch (torchmetrics, scipy.signal, torch._dynamo)")
    from lightning_ebm import cli

    mark("import lightning_ebm.cli (the project's modules)")

    class Phases(pl.Callback):
        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            mark("loggers started (wandb), callbacks' setup")

        def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            mark("sanity check started")

        def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            mark("sanity check done")

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            mark("on_train_start (callbacks after this one: the step-0 sample grid)")

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
            mark("the first training step began")
            trainer.should_stop = True

    fit = pl.Trainer.fit

    def marked_fit(self: pl.Trainer, *a: object, **k: object) -> object:
        mark("config parsed; data, model and trainer built (Trainer.fit entered)")
        self.callbacks.insert(0, Phases())
        return fit(self, *a, **k)

    pl.Trainer.fit = marked_fit
    cli.run(args)


def phases(root: str | None = None) -> list[tuple[str, float]]:
    """The main job's start-up split into phases, from one fresh process: ``(phase, seconds it took)`` in order,
    the first ``("the interpreter ran this script", seconds from the command)`` and the last the total."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    with tempfile.TemporaryDirectory(prefix="lightning_ebm_startup_") as tmp:
        fit = ["fit", "--config", "texture", "--trainer.max_steps=1", f"--trainer.default_root_dir={root or tmp}/runs"]
        done = subprocess.run(
            [sys.executable, __file__, "--phase-child", *fit], env=env, cwd=tmp, capture_output=True, text=True
        )
    marks = [line.split(" ", 2)[1:] for line in done.stderr.splitlines() if line.startswith(PHASE_MARK + " ")]
    if done.returncode != 0 or not marks:
        raise RuntimeError(f"the phase run failed:\n{done.stderr[-3000:]}")
    rows, before = [], 0.0
    for seconds, name in marks:
        rows.append((name, float(seconds) - before))
        before = float(seconds)
    return [*rows, ("total: the command to the first training step", before)]


def phase_table(rows: list[tuple[str, float]]) -> str:
    """The rows of :func:`phases` as a markdown table."""
    lines = ["| phase of `lightning-ebm fit --config texture` | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in rows]
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """The rows of :func:`measure` as a markdown table."""
    lines = ["| what | command | seconds (min) | runs | / import torch |", "|---|---|---:|---|---:|"]
    for row in rows:
        seconds = "n/a" if row["seconds"] is None else f"{row['seconds']:.2f}"
        ratio = "n/a" if row["vs_import_torch"] is None else f"{row['vs_import_torch']:.2f}x"
        each = ", ".join("n/a" if s is None else f"{s:.2f}" for s in row["runs"])
        lines.append(f"| {row['what']} | `{row['command']}` | {seconds} | {each} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    """Measure and print the table, with the machine's CPU count and load."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per figure; the minimum is reported")
    parser.add_argument("--phases", action="store_true", help="split the fit row into its phases (one process)")
    if sys.argv[1:2] == ["--phase-child"]:
        return _phase_child(sys.argv[2:])
    args = parser.parse_args()
    if args.phases:
        print(phase_table(phases()))
        return
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = measure(args.runs)
    after = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(table(rows))
    if load and after:
        print(f"\n{os.cpu_count()} CPUs; load average (1 min) {load[0]:.2f} before, {after[0]:.2f} after")


if __name__ == "__main__":
    main()
