"""The README's commands run as written: each cheap command of its shell blocks, in a fresh bash that entered the
environment the way the README says (``source .venv/bin/activate``), from a folder outside the checkout."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHEAP = ("--help", "--print_config", "--model.help", "--dry-run", "--config debug")


def readme_commands() -> list[str]:
    """Every line of the README's ```bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def cheap_commands() -> list[str]:
    """The program's lines that answer in seconds: help, configs, dry runs and the debug preset."""
    return [c for c in readme_commands() if c.startswith("lightning-ebm") and any(flag in c for flag in CHEAP)]


def test_the_readme_says_how_to_enter_the_environment_and_has_cheap_commands():
    commands = readme_commands()
    assert "source .venv/bin/activate" in commands
    assert commands.index("source .venv/bin/activate") < min(commands.index(c) for c in cheap_commands())
    assert len(cheap_commands()) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("command", cheap_commands())
def test_readme_command_runs_as_written(command, tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the environment `make install` made, where the README says
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "LIGHTNING_EBM_"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: nothing of this test's environment on the PATH
    env["NETRC"] = str(tmp_path / "no-netrc")
    script = f"set -e\nsource .venv/bin/activate\n{command}\n"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    if "--print_config" in command:
        assert "class_path: lightning_ebm.methods." in out.stdout
    if "--dry-run" in command:
        assert "#SBATCH --gpus-per-node=4" in out.stdout and " fit " in out.stdout
    if "--config debug" in command:
        assert list(tmp_path.glob("runs/texture/*/checkpoints/last.ckpt"))
