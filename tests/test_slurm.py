"""SLURM for real: `submit` CPU DDP training jobs to a two-node cluster started on this machine (two slurmd on one
host), one of 1 node x 2 tasks and one of 2 nodes x 1 task, signal each mid-run as the time limit would, and check
that it checkpoints, requeues itself, resumes with every rank's chains intact and finishes all its steps. Skipped,
with the reason, where no private cluster can be started (the two-node job alone where a second slurmd cannot)."""

import pytest
import torch

from tests import slurm
from tests.conftest import ROOT, TEXTURE, TINY


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes where a second slurmd can run on this machine (one, and the reason, where it cannot)."""
    reason = slurm.unavailable()
    if reason:
        pytest.skip(reason)
    started = slurm.Cluster(tmp_path_factory.mktemp("slurm"), nodes=2)
    yield started
    started.stop()


def requeued_job(cluster, tmp_path, monkeypatch, nodes: int, tasks_per_node: int) -> None:
    """`submit` a CPU DDP training job of ``nodes`` x ``tasks_per_node`` processes, signal it mid-run as the time limit
    would, and check that it checkpoints, requeues itself, resumes with every rank's chains and finishes its steps."""
    from lightning_ebm.slurm import submit

    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(ROOT)  # the job runs where submit ran, and imports tests.probes from there
    steps, ranks = 40, nodes * tasks_per_node
    fit = ["--config", TEXTURE, *TINY, "--model.n_chains=2", f"--trainer.max_steps={steps}", "--trainer.logger=false"]
    fit += ["--trainer.enable_progress_bar=false", "--trainer.callbacks+=tests.probes.RequeueProbe"]
    slurm_flags = [f"--nodes={nodes}", f"--tasks-per-node={tasks_per_node}", "--cpus-per-task=1", "--time=00:10:00"]
    job = submit([*fit, *slurm_flags, f"--root={tmp_path}"])
    (run,) = (tmp_path / "texture").iterdir()
    assert (run / "job.sbatch").read_text().count("#SBATCH --signal=SIGUSR1@90") == 1

    def step() -> int:
        progress = run / "progress.txt"
        return int(progress.read_text() or 0) if progress.exists() else 0

    cluster.wait(lambda: step() >= 10, 120, "the job to pass step 10")
    cluster.run("scancel", "--signal=USR1", job)  # what --signal=SIGUSR1@90 sends before the time limit

    moved: list[bool] = []

    def finished() -> bool:
        info = cluster.job(job)
        if info.get("JobState") == "PENDING" and info.get("Restarts") == "1" and not moved:
            # shorten SLURM's 2-minute requeue delay, not to nothing: slurmd refuses to launch a job whose
            # credential is from the second in which the job was killed ("already killed, do not launch")
            cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now+2")
            moved.append(True)
        return info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")

    cluster.wait(finished, 240, "the requeued job to finish")
    info = cluster.job(job)
    log = next(run.glob("slurm-*.out")).read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, log[-3000:], cluster.logs())
    assert info["NumNodes"] == str(nodes) and "SIGUSR1 received" in log

    hpc = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)
    signalled_at = hpc["global_step"]
    assert 10 <= signalled_at < steps and hpc["ebm_state"]["bank.chains"].shape[0] == ranks
    for rank in range(ranks):
        first = torch.load(run / f"start_0_rank{rank}.pt", weights_only=True)
        again = torch.load(run / f"start_1_rank{rank}.pt", weights_only=True)
        assert first["global_step"] == 0 and again["global_step"] == signalled_at
        assert torch.equal(again["chains"], hpc["ebm_state"]["bank.chains"][rank])  # each rank got its own back
        assert torch.equal(again["rng"], hpc["ebm_state"]["rng"][rank])
    assert not torch.equal(hpc["ebm_state"]["bank.chains"][0], hpc["ebm_state"]["bank.chains"][1])
    assert sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps


@pytest.mark.slow
def test_signalled_job_checkpoints_requeues_and_finishes_with_its_chains(cluster, tmp_path, monkeypatch):
    requeued_job(cluster, tmp_path, monkeypatch, nodes=1, tasks_per_node=2)


@pytest.mark.slow
def test_two_node_job_checkpoints_requeues_and_finishes_with_its_chains(cluster, tmp_path, monkeypatch):
    if cluster.nodes < 2:
        pytest.skip(f"this SLURM cannot run a second slurmd on one machine: {cluster.refused}")
    requeued_job(cluster, tmp_path, monkeypatch, nodes=2, tasks_per_node=1)


def test_submit_dry_run_prints_one_task_per_gpu_and_the_requeue_settings(tmp_path, capsys):
    from lightning_ebm.slurm import submit

    flags = ["--nodes=2", "--gpus-per-node=4", "--time=1:00:00", "--partition=gpu", "--sbatch=[--qos=high]"]
    script = submit(["--config", TEXTURE, "--model.langevin_steps=5", *flags, f"--root={tmp_path}", "--dry-run"])
    assert script in capsys.readouterr().out and not any(tmp_path.iterdir())  # printed, nothing written
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--signal=SIGUSR1@90", "--requeue",
                 "--partition=gpu", "--qos=high", "--time=1:00:00"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--model.langevin_steps=5" in srun and "--trainer.num_nodes=2" in srun and "--trainer.devices=4" in srun
    assert "--trainer.accelerator=gpu" in srun and "conf/trainer/slurm.yaml" in srun
    assert f"LIGHTNING_EBM_RUN_DIR={tmp_path}/texture/" in script


def test_submit_refuses_what_cannot_run(tmp_path, monkeypatch):
    from lightning_ebm.errors import UsageError
    from lightning_ebm.slurm import submit

    with pytest.raises(UsageError, match="submit needs the recipe"):
        submit(["--nodes=1", "--dry-run"])
    with pytest.raises(UsageError, match="langevin_stepz"):  # a wrong fit flag fails before anything is queued
        submit(["--config", TEXTURE, "--model.langevin_stepz=3", "--dry-run"])
    with pytest.raises(UsageError, match="one process per GPU"):
        submit(["--config", TEXTURE, "--gpus-per-node=4", "--tasks-per-node=2", "--dry-run"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="sbatch is not on this machine's PATH"):
        submit(["--config", TEXTURE, f"--root={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_submit_reads_the_job_from_a_slurm_section_and_flags_override_it(tmp_path):
    from lightning_ebm.slurm import submit

    job = tmp_path / "job.yaml"
    job.write_text("slurm:\n  nodes: 3\n  gpus_per_node: 2\n  time: '2:00:00'\n  sbatch: ['--qos=low']\n")
    script = submit(["--config", TEXTURE, "--config", str(job), "--time=3:00:00", f"--root={tmp_path}", "--dry-run"])
    for line in ("--nodes=3", "--ntasks-per-node=2", "--gpus-per-node=2", "--time=3:00:00", "--qos=low"):
        assert f"#SBATCH {line}\n" in script, line
    assert "--trainer.num_nodes=3" in script and "--trainer.devices=2" in script


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\nsbatch: error: "
         "fetch_config: DNS SRV lookup failed", "sbatch cannot reach a SLURM controller from here"),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified",
         "sbatch refused the job: sbatch: error: Batch job submission failed: Invalid partition name specified"),
    ],
)  # fmt: skip
def test_a_refused_sbatch_is_one_line_and_leaves_no_run_directory(stderr, message, tmp_path, monkeypatch):
    from lightning_ebm.errors import UsageError
    from lightning_ebm.slurm import submit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\ncat >&2 <<'END'\n{stderr}\nEND\nexit 1\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    root = tmp_path / "runs"
    with pytest.raises(UsageError, match=message) as refused:
        submit(["--config", TEXTURE, f"--root={root}"])
    assert "\n" not in str(refused.value)
    assert not root.exists()  # the run directory it made for job.sbatch is gone, and the folders above it
