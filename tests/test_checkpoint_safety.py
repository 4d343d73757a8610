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

# The real command line, stopped for a SIGKILL at a chosen checkpoint save: "inside" the KILL_AT_SAVE-th save of rank 0
# (a few bytes written, then a wait, as on slow storage), or "after" it (the file committed, the run about to go on).
# A script file, not `python -c`: Lightning's DDP launcher starts rank 1 as `python <sys.argv[0]> <sys.argv[1:]>`.
KILL_POINT = """
import os, sys, time, torch
from lightning_ebm.checkpoint_io import TEMP_MARK
NTH, MOMENT, SIGNAL_FILE = int(os.environ["KILL_AT_SAVE"]), os.environ["KILL_MOMENT"], os.environ["KILL_SIGNAL_FILE"]
real_save, real_replace, saves = torch.save, os.replace, []
def ours(name):  # a checkpoint file being written by rank 0 (the only rank that writes them)
    return TEMP_MARK in name and os.environ.get("LOCAL_RANK", "0") == "0"
def wait_for_the_kill(name):
    with open(SIGNAL_FILE, "w") as f:
        f.write(name)
    time.sleep(600)
def save(obj, f, *args, **kwargs):
    name = str(getattr(f, "name", ""))
    if ours(name):
        saves.append(name)
        if len(saves) == NTH and MOMENT == "inside":
            f.write(b"PK partial")
            f.flush()
            wait_for_the_kill(name)
    return real_save(obj, f, *args, **kwargs)
def replace(src, dst):
    real_replace(src, dst)
    if ours(str(src)) and len(saves) == NTH and MOMENT == "after":
        wait_for_the_kill(str(dst))
torch.save, os.replace = save, replace
from lightning_ebm.__main__ import cli_main
sys.exit(cli_main())
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


SIX_STEPS = ["fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=6", "--seed_everything=3"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> dict:
    """The final state of ``SIX_STEPS`` run without a stop, in a fresh process."""
    root = tmp_path_factory.mktemp("straight")
    console(*SIX_STEPS, f"--trainer.default_root_dir={root}")
    (run,) = run_dirs(root)
    return final_state(run)


# The debug preset saves every 2 steps, each save two files: epoch=…-step=N.ckpt, then last.ckpt.
@pytest.mark.parametrize(
    ("nth_save", "moment", "resumes_from"),
    [
        (3, "inside", 2),  # inside step 4's first file: last.ckpt is step 2's
        (3, "after", 4),  # step 4's periodic file whole, last.ckpt still step 2's: the newest intact file is step 4's
        (4, "after", 4),  # between saves: step 4 wholly saved, killed before step 5
    ],
    ids=["inside-a-save", "between-the-two-files-of-a-save", "between-saves"],
)
def test_killed_run_resumes_with_last_to_the_state_of_an_uninterrupted_one(
    tmp_path, other_fs_tmp, straight_run, nth_save, moment, resumes_from
):
    """6 steps straight equal 6 steps SIGKILLed at a chosen moment (TMPDIR on a tmpfs) and resumed with ``last``."""
    root = tmp_path / "killed"
    touched = kill_at_save([*SIX_STEPS, f"--trainer.default_root_dir={root}"], nth_save, moment, tmp_path, other_fs_tmp)
    (run,) = run_dirs(root)
    assert touched.parent == run / "checkpoints" and not files_in(other_fs_tmp)
    newest = newest_intact(run / "checkpoints")
    assert torch.load(newest, weights_only=True)["global_step"] == resumes_from
    console(*SIX_STEPS, "--ckpt_path", "last", f"--trainer.default_root_dir={root}")
    assert run_dirs(root) == [run]  # continued in its own directory
    assert not list((run / "checkpoints").glob(f"*{TEMP_MARK}*"))  # removed at the next start
    assert_same(final_state(run), straight_run)


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


def kill_at_save(args: list[str], nth_save: int, moment: str, cwd: Path, tmpdir: Path, processes: int = 1) -> Path:
    """Run ``lightning-ebm <args>`` (``processes`` of them, for DDP) and SIGKILL the whole job ``moment`` ("inside"
    or "after") rank 0's ``nth_save``-th checkpoint save; returns the file that save was writing or had written."""
    script = cwd / "kill_point.py"
    script.write_text(KILL_POINT)
    signal_file, log = cwd / "kill-now", cwd / "killed-run.log"
    env = {**os.environ, "TMPDIR": str(tmpdir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.update(KILL_AT_SAVE=str(nth_save), KILL_MOMENT=moment, KILL_SIGNAL_FILE=str(signal_file))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    with open(log, "w") as stderr:
        job = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: the launcher and the ranks it starts
        )
    try:
        deadline = time.monotonic() + 240
        while not (signal_file.is_file() and signal_file.read_text()):
            if job.poll() is not None:
                pytest.fail(f"the run ended before its save number {nth_save}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no save number {nth_save} within 240 s")
            time.sleep(0.02)
        assert len(living_members(job.pid)) >= processes  # for DDP: the launcher (rank 0) and the rank it started
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
        deadline = time.monotonic() + 30
        while living_members(job.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not living_members(job.pid), "a process of the killed job survived"
        return Path(signal_file.read_text())
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
    ddp = ["fit", "--config", DEBUG, "--config", DDP, *args, "--trainer.accelerator=cpu", "--trainer.devices=2"]
    partial = kill_at_save([*ddp, f"--trainer.default_root_dir={root}"], 3, "inside", tmp_path, tmpdir, 2)
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
