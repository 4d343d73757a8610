"""`make install`'s choice of torch build (lightning_ebm/install.py), checked on its dry runs: nothing is installed."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lightning_ebm.install import CPU_INDEX, cuda_packages, fallback, plan
from tests.conftest import ROOT

CPU_TORCH = ["-m", "pip", "install", "--index-url", CPU_INDEX, "--timeout", "5", "--retries", "0", "torch==2.13.0"]
PROJECT = ["-m", "pip", "install", "-e", ".[dev]"]


def dry_run(venv, gpu: str, *args: str) -> list[str]:
    env = {**os.environ, "LIGHTNING_EBM_GPU": gpu}
    command = [sys.executable, "-m", "lightning_ebm.install", "--dry-run", "--venv", str(venv), *args]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_plan_without_a_driver_is_the_cpu_build_then_the_project():
    assert plan(driver=False, torch=None, venv_exists=False, venv="v", python="py") == [
        ["py", "-m", "venv", "v"],
        ["v/bin/python", *CPU_TORCH],
        ["v/bin/python", *PROJECT],
    ]


def test_plan_with_a_driver_sees_system_packages_and_takes_the_default_torch():
    assert plan(driver=True, torch=None, venv_exists=False, venv="v", python="py") == [
        ["py", "-m", "venv", "--system-site-packages", "v"],
        ["v/bin/python", "-m", "pip", "install", "torch==2.13.0"],
        ["v/bin/python", *PROJECT],
    ]


@pytest.mark.parametrize("driver", [False, True])
def test_plan_keeps_a_torch_the_venv_has(driver):
    assert plan(driver=driver, torch="2.5.1+cu121", venv_exists=True, venv="v") == [["v/bin/python", *PROJECT]]


def test_plan_takes_the_knobs():
    torch_command = plan(driver=False, torch=None, venv_exists=True, venv="v", torch_spec="torch>=2.6", cpu_index="I")[
        0
    ]
    assert torch_command[-6:] == ["I", "--timeout", "5", "--retries", "0", "torch>=2.6"]


def report(*packages: tuple[str, str]) -> dict:
    return {"install": [{"metadata": {"name": name, "version": version}} for name, version in packages]}


def test_the_report_check_refuses_cuda_builds_only():
    cuda = report(("torch", "2.13.0"), ("nvidia-cublas-cu12", "12.8.4.1"), ("triton", "3.5.0"), ("sympy", "1.14.0"))
    assert cuda_packages(cuda) == ["nvidia-cublas-cu12==12.8.4.1", "triton==3.5.0"]
    assert cuda_packages(report(("torch", "2.13.0+cu128"), ("filelock", "3.20.0"))) == ["torch==2.13.0+cu128"]
    assert cuda_packages(report(("Nvidia_NCCL_cu12", "2.27.5"))) == ["nvidia-nccl-cu12==2.27.5"]
    assert cuda_packages(report(("cuda-bindings", "13.0.3"))) == ["cuda-bindings==13.0.3"]
    assert cuda_packages(report(("torch", "2.13.0+cpu"), ("sympy", "1.14.0"))) == []
    assert cuda_packages(report(("torch", "2.13.0"), ("filelock", "3.20.0"))) == []  # e.g. macOS: PyPI's is CPU


@pytest.mark.parametrize(
    ("packages", "installed"),
    [
        ([("torch", "2.13.0"), ("nvidia-cudnn-cu12", "9.10.2.21")], None),
        ([("torch", "2.13.0+cpu")], "torch==2.13.0+cpu"),
    ],
)
def test_the_fallback_installs_only_a_build_without_cuda(tmp_path, capsys, packages, installed):
    """A stand-in python records pip's arguments and writes the report: nothing is installed or downloaded."""
    log, fake = tmp_path / "calls.jsonl", tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[1:]\n"
        f"open({str(log)!r}, 'a').write(json.dumps(args) + '\\n')\n"
        f"if '--report' in args:\n"
        f"    open(args[args.index('--report') + 1], 'w').write({json.dumps(json.dumps(report(*packages)))})\n"
    )
    fake.chmod(0o755)
    rc = fallback(str(fake), "torch==2.13.0", CPU_INDEX, "v")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0][:4] == ["-m", "pip", "install", "--dry-run"] and calls[0][-1] == "torch==2.13.0"
    if installed is None:
        assert rc == 1 and len(calls) == 1
        message = capsys.readouterr().err
        assert "nvidia-cudnn-cu12==9.10.2.21" in message and "make install" in message
        assert f"v/bin/python -m pip install --index-url {CPU_INDEX} torch==2.13.0" in message
    else:
        assert rc == 0 and calls[1] == ["-m", "pip", "install", installed]


def test_entry_point_without_a_driver(tmp_path):
    venv = tmp_path / "venv"
    lines = dry_run(venv, "0")
    assert lines[0].startswith("lightning_ebm install: no NVIDIA driver assumed (LIGHTNING_EBM_GPU=0): CPU build")
    commands = [line for line in lines if line.startswith("+ ")]
    assert commands == [
        f"+ {sys.executable} -m venv {venv}",
        f"+ {venv}/bin/python " + " ".join(CPU_TORCH),
        f"+ {venv}/bin/python -m pip install -e '.[dev]'",
    ]
    assert not venv.exists()


def test_entry_point_with_a_driver(tmp_path):
    venv = tmp_path / "venv"
    lines = dry_run(venv, "1", "--torch-spec", "torch>=2.6")
    assert lines[0].startswith("lightning_ebm install: NVIDIA driver assumed (LIGHTNING_EBM_GPU=1): torch>=2.6")
    assert lines[1:] == [
        f"+ {sys.executable} -m venv --system-site-packages {venv}",
        f"+ {venv}/bin/python -m pip install 'torch>=2.6'",
        f"+ {venv}/bin/python -m pip install -e '.[dev]'",
    ]


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_entry_point_keeps_the_torch_a_venv_has(gpu):
    """This test's own venv has torch: the plan is the project alone."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    lines = dry_run(venv, gpu)
    assert lines[0].startswith("lightning_ebm install: torch ") and lines[0].endswith(
        f"already importable in {venv}: kept"
    )
    assert lines[1:] == [f"+ {venv}/bin/python -m pip install -e '.[dev]'"]


def test_entry_point_rejects_a_bad_override(tmp_path):
    env = {**os.environ, "LIGHTNING_EBM_GPU": "yes"}
    command = [sys.executable, "-m", "lightning_ebm.install", "--dry-run", "--venv", str(tmp_path / "v")]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode != 0 and "LIGHTNING_EBM_GPU must be 0 or 1" in out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_plan(tmp_path):
    venv = tmp_path / "venv"
    env = {**os.environ, "LIGHTNING_EBM_GPU": "0"}
    command = ["make", "--no-print-directory", "install-plan", f"VENV={venv}", f"PYTHON={sys.executable}"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1:] == [
        f"+ {sys.executable} -m venv {venv}",
        f"+ {venv}/bin/python " + " ".join(CPU_TORCH),
        "# if that fails: the torch of pip's default index, only if it is not a CUDA build, else stop",
        f"+ {venv}/bin/python -m pip install -e '.[dev]'",
    ]
    assert not venv.exists()
