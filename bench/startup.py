"""Start-up time of the command line, each figure the minimum of ``runs`` fresh processes.

    python bench/startup.py [--runs 3]

Prints a markdown table (it writes no file; ``bench/speed.py`` owns ``bench/RESULTS.md`` and can call
:func:`measure`):

- ``import torch``: ``python -c "import torch"``, the floor any PyTorch program pays;
- ``lightning-ebm --help``: the program's help (answers without importing torch);
- ``fit`` to the first step: ``lightning-ebm fit --config texture --config timing --trainer.max_steps=1`` (the main
  job, its wandb logger on as the recipe has it, ``WANDB_MODE=offline``), from the start of the process to the start
  of the first training step, as :class:`callbacks.IterationTimer` reads it from ``/proc`` (Linux only): imports,
  parsing the config, building the data, the model and the trainer, starting wandb, the sanity check and the
  callbacks' start (the step-0 sample grid).

Each row also gives its ratio to the ``import torch`` floor. Other processes on the machine inflate every figure; the
minimum of several runs is the least disturbed one.
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
    args = parser.parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = measure(args.runs)
    after = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(table(rows))
    if load and after:
        print(f"\n{os.cpu_count()} CPUs; load average (1 min) {load[0]:.2f} before, {after[0]:.2f} after")


if __name__ == "__main__":
    main()
