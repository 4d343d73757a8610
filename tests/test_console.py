"""The console as a user sees it: the installed ``lightning-ebm`` script in a fresh process, with the real
``sys.argv`` and the default logger (wandb, offline without credentials): exit status 0, the run directory at the
start, a summary at the end, and no warning that the framework could prevent."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = Path(sys.executable).parent / "lightning-ebm"

# What a normal run may still print that looks like a warning, each with the reason it is allowed.
ALLOWED = [
    # (none today: every warning a shipped recipe printed is prevented or filtered in lightning_ebm.cli.QUIET)
]
WARNING = re.compile(r"\bwarn|deprecat|traceback|\berror\b", re.IGNORECASE)


def console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lightning-ebm <args>`` in a fresh process, as typed in a shell with no wandb account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIGHTNING_EBM_"))}
    env["NETRC"] = str(cwd / "no-netrc")  # no wandb credentials: the default logger runs offline
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def warnings_in(out: subprocess.CompletedProcess) -> list[str]:
    """Lines of the output that look like a warning or an error and are not allowed."""
    lines = (out.stdout + out.stderr).replace("\r", "\n").splitlines()
    return [line for line in lines if WARNING.search(line) and not any(re.search(a, line) for a in ALLOWED)]


@pytest.mark.slow
def test_fit_validate_test_predict_print_no_warning_and_say_where_things_are(tmp_path):
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the project (make install) before running the tests"
    small = ["--trainer.max_steps=4", "--model.langevin_steps=2", "--data.image_size=40", "--data.crop_size=32"]
    fit = console("fit", "--config", "texture", *small, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert not warnings_in(fit), warnings_in(fit)
    (run,) = (tmp_path / "runs" / "texture").iterdir()
    relative = Path("runs") / "texture" / run.name
    assert f"lightning-ebm fit: run directory {relative}" in fit.stderr
    ckpt = relative / "checkpoints" / "last.ckpt"
    evaluate = f"lightning-ebm validate --config {relative / 'config.yaml'} --ckpt_path {ckpt}"
    for line in ("samples", "checkpoint", "config", "wandb sync", evaluate):
        assert line in fit.stderr, line
    assert fit.stdout.replace("\r", "\n").splitlines()[-1].startswith("step: 100%")  # counts steps, not epochs
    assert "4/4" in fit.stdout and "Epoch" not in fit.stdout
    assert not list(tmp_path.glob("*.yaml")) and not (tmp_path / "lightning_logs").exists()  # all in the run

    for subcommand in ("validate", "test", "predict"):
        out = console(subcommand, "--ckpt_path", str(ckpt), cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert not warnings_in(out), (subcommand, warnings_in(out))
        assert f"lightning-ebm {subcommand}: done" in out.stderr
    (predicted,) = run.glob("predict-*/predictions")
    assert torch.load(predicted / "samples_rank0.pt", weights_only=True).shape[0] > 0


def test_help_lists_every_command_under_the_programs_name_fast_and_without_torch(tmp_path):
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the project (make install) before running the tests"
    out = console("--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("usage: lightning-ebm <command>")
    for command in ("fit", "validate", "test", "predict", "visualize", "submit"):
        assert re.search(rf"^  {command} +\S", out.stdout, re.MULTILINE), command
    probe = "import sys, runpy; sys.argv = ['lightning-ebm', '--help']; "
    probe += "from lightning_ebm.__main__ import cli_main; cli_main(); print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert imported.stdout.strip().endswith("False")  # --help imports no torch: it answers at once


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "--config", "no_such_recipe"],
        ["validate", "--ckpt_path", "x.ckpt"],
        ["submit", "--nodes", "2"],
        ["visualize", "--ckpt_path", "x.ckpt"],
    ],
    ids=["unknown-recipe", "no-ckpt", "submit-no-recipe", "visualize-no-ckpt"],
)
def test_what_needs_no_torch_is_refused_without_importing_it(args, tmp_path):
    probe = "import sys; from lightning_ebm.__main__ import cli_main; "
    probe += f"print(cli_main({args!r}), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["2", "False"], out.stderr  # refused at once, not after seconds of imports
    assert ": error: " in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--config", "texture", "--model.langevin_stepsize=0.1"], "did you mean langevin_step_size?"),
        (["fit", "--config", "texture", "--trainer.max_stepz=3"], "did you mean --trainer.max_steps?"),
        (["fit", "--config", "no_such_recipe"], "recipes: abp_celeba_paper, "),
        (["fit", "--config", "texture", "--data.textures=./no_such.png"], "no_such.png"),
        (["validate", "--ckpt_path", "runs/x/last.ckpt"], "--ckpt_path runs/x/last.ckpt: no such file"),
        (["visualize", "--ckpt_path", "nothing.ckpt"], "--ckpt_path nothing.ckpt: no such file"),
        (["visualize", "--ckpt_path", "x.ckpt", "--n=many"], "--n"),
        (["submit", "--nodes", "2"], "submit needs the recipe"),
        (["frobnicate"], "the commands are fit, validate, test, predict, visualize, submit"),
    ],
    ids=[
        "unknown-option",
        "unknown-flag",
        "unknown-recipe",
        "missing-file",
        "no-ckpt",
        "visualize-no-ckpt",
        "visualize-bad-type",
        "submit-no-recipe",
        "unknown-command",
    ],
)
def test_a_refused_input_is_one_line_and_exit_status_2(args, message, tmp_path):
    out = console(*args, cwd=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert out.stderr.startswith(f"lightning-ebm {args[0]}: error: ")
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_a_shadowing_callbacks_module_is_named(tmp_path):
    (tmp_path / "callbacks.py").write_text("raise ImportError('not ours')\n")
    out = subprocess.run(
        [sys.executable, "-m", "lightning_ebm", "fit", "--config", "texture", "--print_config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert out.returncode == 2
    assert f"the module 'callbacks' found first is {tmp_path / 'callbacks.py'}" in out.stderr
    assert str(ROOT / "callbacks") in out.stderr or "site-packages" in out.stderr
