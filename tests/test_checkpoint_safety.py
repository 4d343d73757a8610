"""Checkpoints a kill cannot lose, ``--ckpt_path last`` as the newest intact checkpoint, and one run directory per
run however many start at once."""

import contextlib
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
from tests.test_ddp import DDP, run_ddp

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


@pytest.fixture
def other_fs_tmp(tmp_path: Path):
    """A temp folder on another filesystem than ``tmp_path`` (a tmpfs where there is one), empty; removed afterwards
    whatever the test's outcome (a tmpfs is not removed with ``tmp_path``)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev else tmp_path
    folder = base / f"lightning-ebm-test-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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


def test_a_kill_inside_a_save_keeps_the_previous_file_and_leaves_nothing_in_tmpdir(tmp_path, other_fs_tmp):
    folder = tmp_path / "checkpoints"
    atomic_save({"step": torch.tensor(1)}, folder / "last.ckpt")
    tmpdir = other_fs_tmp
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


def test_killed_inside_a_save_with_tmpdir_elsewhere_resumes_to_the_same_state(tmp_path, other_fs_tmp):
    """6 steps straight equal 6 steps killed inside the step-4 save (TMPDIR on a tmpfs) and resumed with ``last``."""
    args = ["fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=6", "--seed_everything=3"]
    console(*args, f"--trainer.default_root_dir={tmp_path / 'straight'}")  # all three runs in fresh processes
    (straight,) = run_dirs(tmp_path / "straight")

    root = tmp_path / "killed"
    tmpdir = other_fs_tmp
    # saves: the two files of step 2, then the first of step 4, killed inside
    partial = kill_inside_save([*args, f"--trainer.default_root_dir={root}"], 3, tmp_path, tmpdir)
    (run,) = run_dirs(root)
    assert partial.parent == run / "checkpoints" and not files_in(tmpdir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    console(*args, "--ckpt_path", "last", f"--trainer.default_root_dir={root}")
    assert not list((run / "checkpoints").glob(f"*{TEMP_MARK}*"))  # removed at the next start
    assert_same(final_state(run), final_state(straight))


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


# SLOW_SAVE as a script file: Lightning's DDP launcher starts rank 1 as `python <sys.argv[0]> <sys.argv[1:]>`, so the
# command line must be the CLI's own (`fit ...`) and the number of the save to slow comes from the environment. Only
# rank 0 writes checkpoints; rank 1 runs the same file unslowed.
SLOW_SAVE_SCRIPT = """
import os, sys, time, torch
real, calls = torch.save, []
def slow(obj, f, *args, **kwargs):
    if ".partial-" not in str(getattr(f, "name", "")) or os.environ.get("LOCAL_RANK", "0") != "0":
        return real(obj, f, *args, **kwargs)
    calls.append(1)
    if len(calls) == int(os.environ["SLOW_SAVE_NTH"]):
        f.write(b"PK partial")
        f.flush()
        open(os.environ["SLOW_SAVE_STARTED"], "w").write(f.name)  # the test kills the job now
        time.sleep(600)
    return real(obj, f, *args, **kwargs)
torch.save = slow
from lightning_ebm.__main__ import cli_main
sys.exit(cli_main())
"""


def living_members(group: int) -> list[int]:
    """The processes of process group ``group`` that are not dead (zombies, which no one may reap here, are dead)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_ddp_inside_save(args: list[str], nth_save: int, cwd: Path, tmpdir: Path) -> Path:
    """Run a 2-process CPU DDP ``fit <args>`` with rank 0 slowed at its ``nth_save``-th checkpoint save; SIGKILL the
    whole job (launcher and worker) inside that save; returns the partial file rank 0 was writing."""
    script = cwd / "slow_save.py"
    script.write_text(SLOW_SAVE_SCRIPT)
    started, log = cwd / "slow-save-started", cwd / "killed-run.log"
    env = {**os.environ, "TMPDIR": str(tmpdir), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.update(SLOW_SAVE_NTH=str(nth_save), SLOW_SAVE_STARTED=str(started))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    cmd = [sys.executable, str(script), "fit", "--config", DEBUG, "--config", DDP, *args]
    cmd += ["--trainer.accelerator=cpu", "--trainer.devices=2"]
    with open(log, "w") as stderr:
        job = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (started.is_file() and started.read_text()):
            if job.poll() is not None:
                pytest.fail(f"the run ended before its save number {nth_save}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no save started within 240 s")
            time.sleep(0.02)
        assert len(living_members(job.pid)) >= 2  # the launcher (rank 0) and the worker it started (rank 1)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
        deadline = time.monotonic() + 30
        while living_members(job.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not living_members(job.pid), "a process of the killed job survived"
        return Path(started.read_text())
    finally:
        if living_members(job.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
        if job.poll() is None:
            job.wait(30)


@pytest.mark.slow
def test_ddp_job_killed_inside_a_save_resumes_to_the_same_state(tmp_path, other_fs_tmp):
    """2-process DDP: 6 steps straight equal 6 steps with the whole job killed inside rank 0's step-4 save (TMPDIR on
    a tmpfs) and resumed with ``last``: weights, every rank's chains and noise."""
    # run_ddp puts the debug preset before the recipe, whose checkpoint interval (100) then wins: saves every 2 steps
    args = ["--config", TEXTURE, *TINY, "--model.n_chains=2", "--trainer.max_steps=6", "--seed_everything=3"]
    args += ["--checkpoint.every_n_train_steps=2"]
    run_ddp(args, tmp_path / "straight")
    (straight,) = run_dirs(tmp_path / "straight")

    root = tmp_path / "killed"
    tmpdir = other_fs_tmp
    # rank 0's saves: the two files of step 2, then the first of step 4, killed inside
    partial = kill_ddp_inside_save([*args, f"--trainer.default_root_dir={root}"], 3, tmp_path, tmpdir)
    (run,) = run_dirs(root)
    assert partial.parent == run / "checkpoints" and partial.is_file() and not files_in(tmpdir)
    assert partial.name.startswith(".epoch=") and f"-step=4.ckpt{TEMP_MARK}" in partial.name
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    run_ddp([*args, "--ckpt_path=last"], root)
    assert run_dirs(root) == [run]  # continued in its own directory
    assert not list((run / "checkpoints").glob(f"*{TEMP_MARK}*"))  # removed at the next start
    resumed, reference = final_state(run), final_state(straight)
    assert resumed["step"] == 6 and resumed["world_size"] == 2 and resumed["bank.chains"].shape[0] == 2
    assert_same(resumed, reference)
