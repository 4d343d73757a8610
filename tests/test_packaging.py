"""The wheel is complete: built from a copy of the checkout, installed without dependencies into a fresh environment
that sees the project's installed dependencies, it runs a debug-preset fit and a SLURM dry run from a folder that is
not the checkout, with the recipes by name."""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIP = shutil.ignore_patterns(".venv", ".git", "runs", "wandb", "build", "dist", "*.egg-info", "__pycache__", ".*cache")


def run(*cmd: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-3000:])
    return out


@pytest.mark.slow
def test_wheel_installs_and_runs_a_recipe_by_name_outside_the_checkout(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=SKIP, symlinks=True)  # the build writes build/ and *.egg-info: not here
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", ".", cwd=source)
    (wheel,) = (source / "dist").glob("lightning_ebm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("lightning_ebm/conf/experiments/texture.yaml", "lightning_ebm/conf/trainer/debug.yaml",
                    "lightning_ebm/conf/sweeps/coopnets_digits.yaml", "lightning_ebm/conf/slurm/job.sbatch",
                    "lightning_ebm/py.typed", "callbacks/__init__.py", "datamodules/__init__.py"):  # fmt: skip
        assert shipped in names, shipped

    env_dir = tmp_path / "env"
    run(sys.executable, "-m", "venv", str(env_dir), cwd=tmp_path)
    python = env_dir / "bin" / "python"
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    # the project's dependencies, as installed beside this test (their .pth files are not processed, so the
    # checkout's editable install stays invisible)
    Path(purelib.stdout.strip(), "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "LIGHTNING_EBM_", "PYTHON"))}
    env["WANDB_MODE"] = "offline"
    where = run(str(python), "-c", "import lightning_ebm, callbacks; print(lightning_ebm.__file__, callbacks.__file__)",
                cwd=elsewhere, env=env)  # fmt: skip
    assert str(ROOT) not in where.stdout and str(env_dir) in where.stdout
    script = str(env_dir / "bin" / "lightning-ebm")
    small = ["--model.langevin_steps=2", "--data.image_size=32", "--data.crop_size=24"]
    fit = run(script, "fit", "--config", "texture", "--config", "debug", *small, cwd=elsewhere, env=env)
    assert "lightning-ebm fit: done" in fit.stderr
    assert list(elsewhere.glob("runs/texture/*/checkpoints/last.ckpt"))
    dry = run(script, "submit", "--config", "texture", "--dry-run", cwd=elsewhere, env=env)
    assert f"{env_dir}/lib" in dry.stdout and "lightning_ebm/conf/trainer/slurm.yaml" in dry.stdout
