"""Create the venv and install the project, choosing the torch build on purpose (what `make install` runs).

Run it from the checkout root: ``python -m lightning_ebm.install [--venv .venv] [--dry-run]``. It uses only the
standard library, since it runs before torch exists (``lightning_ebm/__init__.py`` imports nothing heavy, so
``python -m`` reaches this module without the project's dependencies; keep both that way).

torch goes in first, by itself, so that the project's loose ``torch>=2.6`` never pulls a CUDA build onto a machine
that cannot use it:

- a torch the venv's python already imports is kept, and nothing is installed for torch;
- an NVIDIA driver found (``nvidia-smi`` on PATH, or ``/proc/driver/nvidia/version``): the venv is made with
  ``--system-site-packages`` (so a torch your Python has is kept), else ``torch==2.13.0`` from pip's default index,
  which on PyPI is the CUDA build (~17 nvidia/triton wheels);
- no driver: the CPU build from PyTorch's CPU wheel index. Where that index cannot be reached pip still takes a
  ``+cpu`` wheel that its config offers (find-links); failing both, the torch of pip's default index is installed
  only if it is not a CUDA build (no ``nvidia-*``, ``cuda-*`` or ``triton`` package, no ``+cu`` version), else it
  stops and says what to do.

Then ``pip install -e '.[dev]'``, which keeps the torch already there. ``LIGHTNING_EBM_GPU=0|1`` overrides the
driver detection. ``--dry-run`` prints the commands, shell-quoted and prefixed ``+ ``, and runs nothing; there a
venv that does not exist yet counts as having no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH_SPEC = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")
PREFIX = "lightning_ebm install: "


def detect_driver() -> tuple[bool, str]:
    """Whether an NVIDIA driver is there, and what said so (``LIGHTNING_EBM_GPU=0|1`` overrides)."""
    override = os.environ.get("LIGHTNING_EBM_GPU", "")
    if override in ("0", "1"):
        return override == "1", f"LIGHTNING_EBM_GPU={override}"
    if override:
        sys.exit(f"{PREFIX}LIGHTNING_EBM_GPU must be 0 or 1, not {override!r}")
    if shutil.which("nvidia-smi"):
        return True, "nvidia-smi"
    if Path("/proc/driver/nvidia/version").exists():
        return True, "/proc/driver/nvidia/version"
    return False, ""


def torch_version(python: str) -> str | None:
    """The version of the torch that ``python`` imports, or None."""
    try:
        out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else None


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def cpu_torch_command(python: str, torch_spec: str, cpu_index: str) -> list[str]:
    """The CPU build: a short timeout and no retries, so an unreachable index fails fast and find-links still count."""
    return [python, "-m", "pip", "install", "--index-url", cpu_index, "--timeout", "5", "--retries", "0", torch_spec]


def plan(
    *,
    driver: bool,
    torch: str | None,
    venv_exists: bool,
    venv: str = ".venv",
    python: str = sys.executable,
    torch_spec: str = TORCH_SPEC,
    cpu_index: str = CPU_INDEX,
) -> list[list[str]]:
    """The commands for these facts: a driver or not, the venv's torch version (None: none), the venv there or not."""
    py = venv_python(venv)
    commands: list[list[str]] = []
    if not venv_exists:
        commands.append([python, "-m", "venv", *(["--system-site-packages"] if driver else []), venv])
    if torch is None:
        commands.append(
            [py, "-m", "pip", "install", torch_spec] if driver else cpu_torch_command(py, torch_spec, cpu_index)
        )
    commands.append([py, "-m", "pip", "install", "-e", ".[dev]"])
    return commands


def cuda_packages(report: dict) -> list[str]:
    """The CUDA packages (``name==version``) a ``pip install --report`` document lists; none: a build without CUDA."""
    found = []
    for item in report.get("install", []):
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"].lower())
        version = item["metadata"]["version"]
        if name.startswith(CUDA_PREFIXES) or (name == "torch" and "+cu" in version):
            found.append(f"{name}=={version}")
    return found


def run(command: list[str]) -> int:
    print("+ " + shlex.join(command), flush=True)
    return subprocess.run(command).returncode


def fallback(python: str, torch_spec: str, cpu_index: str, venv: str) -> int:
    """After the CPU index failed: the torch of pip's default index, only if it is not a CUDA build."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        rc = run([python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", report_path, torch_spec])
        report = json.loads(Path(report_path).read_text()) if rc == 0 else {}
    cuda = cuda_packages(report)
    versions = [i["metadata"]["version"] for i in report.get("install", []) if i["metadata"]["name"].lower() == "torch"]
    if rc == 0 and not cuda and versions:
        return run([python, "-m", "pip", "install", f"torch=={versions[0]}"])
    listed = ", ".join(cuda[:3]) + (f" and {len(cuda) - 3} more" if len(cuda) > 3 else "")
    found = f"the torch pip finds otherwise is a CUDA build ({listed})" if cuda else "pip found no other torch"
    print(
        f"{PREFIX}stopped. PyTorch's CPU wheel index ({cpu_index}) gave no {torch_spec} (unreachable, or no such "
        f"build) and {found}; without an NVIDIA driver a CUDA build is never installed. Install a CPU build of torch "
        f"into {venv} yourself, e.g. `{venv_python(venv)} -m pip install --index-url {cpu_index} {torch_spec}` where "
        f"that index is reachable (or `pip install` a downloaded +cpu wheel), then rerun `make install`. If this "
        "machine does have an NVIDIA GPU, rerun with LIGHTNING_EBM_GPU=1.",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_ebm.install", description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=".venv", help="the virtual environment (made if missing; default .venv)")
    parser.add_argument("--torch-spec", default=TORCH_SPEC, help=f"the torch requirement (default {TORCH_SPEC})")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help=f"the CPU wheel index (default {CPU_INDEX})")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if not Path("pyproject.toml").is_file():
        sys.exit(f"{PREFIX}run it from the checkout root (no pyproject.toml in {os.getcwd()})")

    driver, source = detect_driver()
    py = venv_python(args.venv)
    venv_exists = os.path.exists(py)
    torch_where = f"in {args.venv}"
    if venv_exists:
        torch = torch_version(py)
    elif driver and not args.dry_run:  # the new venv will see the packages of the Python that makes it
        base = getattr(sys, "_base_executable", sys.executable)
        torch, torch_where = torch_version(base), f"by {base}, which the new {args.venv} will see"
    else:
        torch = None

    verb = "assumed" if source.startswith("LIGHTNING_EBM_GPU") else "found"
    where = f" ({source})" if source else ""
    if torch is not None:
        why = f"torch {torch} already importable {torch_where}: kept"
    elif driver:
        why = f"NVIDIA driver {verb}{where}: {args.torch_spec} from pip's default index (PyPI: the CUDA build)"
    else:
        why = f"no NVIDIA driver {verb}{where}: CPU build of {args.torch_spec} from PyTorch's CPU wheel index"
    print(PREFIX + why, flush=True)

    commands = plan(
        driver=driver,
        torch=torch,
        venv_exists=venv_exists,
        venv=args.venv,
        torch_spec=args.torch_spec,
        cpu_index=args.cpu_index,
    )
    cpu_command = cpu_torch_command(py, args.torch_spec, args.cpu_index)
    if args.dry_run:
        for command in commands:
            print("+ " + shlex.join(command))
            if command == cpu_command:
                print("# if that fails: the torch of pip's default index, only if it is not a CUDA build, else stop")
        return 0
    for command in commands:
        rc = run(command)
        if rc and command == cpu_command:
            print(f"{PREFIX}the CPU wheel index gave no {args.torch_spec}; trying pip's default index", flush=True)
            rc = fallback(py, args.torch_spec, args.cpu_index, args.venv)
        elif rc:
            print(f"{PREFIX}failed (exit {rc}): {shlex.join(command)}", file=sys.stderr)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
