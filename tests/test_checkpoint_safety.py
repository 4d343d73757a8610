"""Checkpoints a kill cannot lose, ``--ckpt_path last`` as the newest intact checkpoint, and one run directory per
run however many start at once."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lightning_ebm.checkpoint_io import TEMP_MARK, atomic_save, newest_intact, remove_partial_saves
from tests.conftest import DEBUG, ROOT, TEXTURE, TINY, run_cli, run_dirs

SCRIPT = Path(sys.executable).parent / "lightning-ebm"

# A child process that runs the real command line with its N-th checkpoint save slowed down: torch.save writes a few
# bytes, then waits, as a save to slow storage does, so that the test can kill it inside that save.
SLOW_SAVE = """
import os, sys, time, torch
real, calls = torch.save, []
def slow(obj, f, *args, **kwargs):
    if ".partial-" not in str(getattr(f, "name", "")):  # not a checkpoint file
        return real(obj, f, *args, **kwargs)
    calls.append(1)
    if len(calls) == int(sys.argv[1]):
        f.write(b"PK partial")
        f.flush()
        open(os.environ["SLOW_SAVE_STARTED"], "w").write(f.name)  # the test kills the process now
        time.sleep(120)
    return real(obj, f, *args, **kwargs)
torch.save = slow
from lightning_ebm.__main__ import cli_main
sys.exit(cli_main(sys.argv[2:]))
"""


def other_filesystem_tmp(tmp_path: Path) -> Path:
    """A temp folder on another filesystem than ``tmp_path`` (a tmpfs where there is one), empty."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev else tmp_path
    folder = base / f"lightning-ebm-test-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir()
    return folder


def console(*args: str) -> None:
    """``lightning-ebm <args>`` in a fresh process; it must succeed."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def files_in(folder: Path) -> list[Path]:
    """The files under ``folder`` (wandb leaves empty folders in the temp folder)."""
    return [p for p in folder.rglob("*") if p.is_file()]


def kill_inside_save(args: list[str], nth_save: int, cwd: Path, tmpdir: Path) -> Path:
    """Run ``lightning-ebm <args>`` slowed at its ``nth_save``-th ``torch.save``, SIGKILL it inside that save; returns
    the partial file it was writing."""
    started = cwd / "slow-save-started"
    env = {**os.environ, "TMPDIR": str(tmpdir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env["SLOW_SAVE_STARTED"] = str(started)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, str(nth_save), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if started.is_file() and started.read_text():
                child.send_signal(signal.SIGKILL)
                child.wait(30)
                return Path(started.read_text())
            if child.poll() is not None:
                pytest.fail(f"the run ended before its save number {nth_save}: {child.stderr.read()[-2000:]}")
            time.sleep(0.02)
        pytest.fail("no save started within 120 s")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_a_kill_inside_a_save_keeps_the_previous_file_and_leaves_nothing_in_tmpdir(tmp_path):
    folder = tmp_path / "checkpoints"
    atomic_save({"step": torch.tensor(1)}, folder / "last.ckpt")
    tmpdir = other_filesystem_tmp(tmp_path)
    script = (
        "import sys, time, torch\n"
        "from lightning_ebm.checkpoint_io import atomic_save\n"
        "real = torch.save\n"
        "def slow(obj, f, *a, **k):\n"
        "    f.write(b'PK partial'); f.flush(); time.sleep(120)\n"
        "torch.save = slow\n"
        f"atomic_save({{'step': torch.tensor(2)}}, {str(folder / 'last.ckpt')!r})\n"
    )
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        for _ in range(3000):
            if list(folder.glob(f".last.ckpt{TEMP_MARK}*")):
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert torch.load(folder / "last.ckpt", weights_only=True)["step"] == 1  # the old file, whole
    assert not files_in(tmpdir)  # the partial file was beside the checkpoint, not in TMPDIR
    (partial,) = remove_partial_saves(folder)
    assert partial.name.startswith(f".last.ckpt{TEMP_MARK}") and not partial.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    shutil.rmtree(tmpdir)


def test_a_full_disk_names_the_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    atomic_save({"step": torch.tensor(1)}, tmp_path / "last.ckpt")

    def full(obj, f, *args, **kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=rf"could not write the checkpoint {tmp_path / 'last.ckpt'} \(File too large\)"):
        atomic_save({"step": torch.tensor(2)}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def final_state(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return {"step": ckpt["global_step"], **ckpt["state_dict"], **ckpt["ebm_state"]}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        value, other = a[key], b[key]
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), key


def test_killed_inside_a_save_with_tmpdir_elsewhere_resumes_to_the_same_state(tmp_path):
    """6 steps straight equal 6 steps killed inside the step-4 save (TMPDIR on a tmpfs) and resumed with ``last``."""
    args = ["fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=6", "--seed_everything=3"]
    console(*args, f"--trainer.default_root_dir={tmp_path / 'straight'}")  # all three runs in fresh processes
    (straight,) = run_dirs(tmp_path / "straight")

    root = tmp_path / "killed"
    tmpdir = other_filesystem_tmp(tmp_path)
    # saves: the two files of step 2, then the first of step 4, killed inside
    partial = kill_inside_save([*args, f"--trainer.default_root_dir={root}"], 3, tmp_path, tmpdir)
    (run,) = run_dirs(root)
    assert partial.parent == run / "checkpoints" and not files_in(tmpdir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    console(*args, "--ckpt_path", "last", f"--trainer.default_root_dir={root}")
    assert not list((run / "checkpoints").glob(f"*{TEMP_MARK}*"))  # removed at the next start
    assert_same(final_state(run), final_state(straight))
    shutil.rmtree(tmpdir)


def test_last_is_the_newest_intact_checkpoint_of_the_run(tmp_path):
    args = ["fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=4"]
    run_cli(*args, root=tmp_path)
    (run,) = run_dirs(tmp_path)
    folder = run / "checkpoints"
    (periodic,) = folder.glob("*step=4.ckpt")
    last = folder / "last.ckpt"
    # a kill between the periodic save and last.ckpt: the periodic one is newer
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert newest_intact(folder) == periodic
    # a last.ckpt cut short (by a save that was not atomic): fall back, and say so
    os.utime(last, None)
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"last.ckpt cannot be read \(truncated or corrupt\); trying an older"):
        cli = run_cli(*args[:-1], "--trainer.max_steps=6", "--ckpt_path", "last", root=tmp_path)
    assert cli.trainer.global_step == 6 and run_dirs(tmp_path) == [run]


def test_runs_started_at_once_each_get_their_own_directory_and_wandb_id(tmp_path):
    from lightning_ebm.cli import _new_dir

    made: list[Path] = []
    threads = [
        threading.Thread(target=lambda: made.append(_new_dir(tmp_path / "r", "20260101-000000"))) for _ in "1234"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 4

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = [str(SCRIPT), "fit", "--config", TEXTURE, *TINY, "--trainer.max_steps=1", "--trainer.limit_val_batches=0"]
    args += ["--trainer.enable_progress_bar=false"]
    runs = [
        subprocess.Popen([*args, f"--seed_everything={s}"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for s in range(4)
    ]
    for run in runs:
        assert run.wait(300) == 0, run.stderr.read()[-2000:]
    dirs = run_dirs(tmp_path / "runs")
    assert len(dirs) == 4
    seeds = {d.joinpath("config.yaml").read_text().split("seed_everything: ")[1].split()[0] for d in dirs}
    assert seeds == {"0", "1", "2", "3"}
    wandb_ids = {next(d.glob("wandb/offline-run-*")).name.rsplit("-", 1)[1] for d in dirs}
    assert len(wandb_ids) == 4
