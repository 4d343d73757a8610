"""Two-process CPU DDP (gloo) through the CLI in a subprocess, as a user launches it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_ebm.samplers.banks import processes
from tests.conftest import DEBUG, ROOT, TEXTURE, TINY, run_dirs

DDP = str(ROOT / "conf" / "trainer" / "ddp.yaml")


def run_ddp(args: list[str], root: Path, devices: int = 2) -> str:
    """``python -m lightning_ebm fit`` on ``devices`` CPU processes (gloo), as a user launches it; its stderr."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lightning_ebm", "fit", "--config", DEBUG, "--config", DDP, *args]
    cmd += ["--trainer.accelerator=cpu", f"--trainer.devices={devices}", f"--trainer.default_root_dir={root}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stderr


@pytest.mark.slow
def test_two_process_fit_keeps_weights_in_sync_and_noise_apart(tmp_path):
    args = ["--config", TEXTURE, *TINY, "--trainer.max_steps=3", "--trainer.callbacks+=tests.probes.RankProbe"]
    run_ddp(args, tmp_path)
    (run,) = run_dirs(tmp_path)  # both ranks wrote into one run directory
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert probes[0]["world_size"] == 2
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)  # gradients were all-reduced: sampling with frozen parameters broke nothing
    assert not torch.equal(probes[0]["chains"], probes[1]["chains"])  # each rank drew its own noise
    assert not torch.equal(probes[0]["rng"], probes[1]["rng"])

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["ebm_state"]
    assert state["world_size"] == 2 and state["bank.chains"].shape == (2, 2, 1, 16, 16)
    for r in (0, 1):  # every rank's chains are in the checkpoint, not only rank zero's
        assert torch.equal(state["bank.chains"][r], probes[r]["chains"])


@pytest.mark.slow
def test_two_process_fit_shards_an_imagenet_tree_across_ranks(tmp_path):
    from tests.datamodules.test_image_sets import WNIDS, write_variants

    for k, wnid in enumerate(WNIDS):
        write_variants(tmp_path / "ilsvrc" / "train" / wnid, 10 * k)
    args = [
        "--model=GenerativeConvNet",
        "--model.net=lightning_ebm.nets.ObjectDescriptor",
        "--model.net.channels=[8]",
        "--model.net.kernel_sizes=[3]",
        "--model.net.strides=[2]",
        "--model.net.n_out=4",
        "--model.n_chains=2",
        "--model.langevin_steps=2",
        "--data=ImageNetDataModule",
        f"--data.root={tmp_path / 'ilsvrc'}",
        "--data.image_size=8",
        "--data.batch_size=2",
        "--data.num_workers=1",
        "--trainer.max_steps=-1",
        "--trainer.max_epochs=1",
        "--trainer.callbacks+=tests.probes.IndexProbe",
    ]
    run_ddp(args, tmp_path / "out")
    (run,) = run_dirs(tmp_path / "out")
    seen = [set(torch.load(run / f"indices_rank{r}.pt", weights_only=True).tolist()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]  # a disjoint half each
    assert seen[0] | seen[1] == set(range(12))


@pytest.mark.slow
def test_two_process_coopnets_needs_no_unused_parameter_search(tmp_path):
    """Manual optimisation of two nets under plain `ddp`: one backward pass reaches every parameter."""
    recipe = str(ROOT / "conf" / "experiments" / "coopnets_digits.yaml")
    args = ["--config", recipe, "--trainer.max_steps=3", "--model.n_chains=8", "--data.batch_size=8"]
    run_ddp([*args, "--trainer.callbacks+=tests.probes.RankProbe"], tmp_path)
    (run,) = run_dirs(tmp_path)
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)
    assert not torch.equal(probes[0]["rng"], probes[1]["rng"])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.slow
def test_two_process_multigrid_keeps_every_grid_in_sync(tmp_path):
    """One optimiser per grid under plain `ddp`; each rank keeps the 1x1 starts of its own shard."""
    recipe = str(ROOT / "conf" / "experiments" / "multigrid_digits.yaml")
    small = ["--trainer.max_steps=3", "--data.batch_size=8", "--model.langevin_steps=2", "--model.descriptor.width=0.1"]
    run_ddp(["--config", recipe, *small, "--trainer.callbacks+=tests.probes.RankProbe"], tmp_path)
    (run,) = run_dirs(tmp_path)
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    starts = ckpt["ebm_state"]["bank.starts"]
    assert ckpt["global_step"] == 3 and starts.shape == (2, 1024, 1, 1, 1)
    assert not torch.equal(starts[0], starts[1])  # each rank saw other digits


@pytest.mark.slow
def test_two_process_abp_keeps_every_latent_on_every_rank(tmp_path):
    """Each rank infers the latents of its shard and gathers the others', so the banks stay identical."""
    recipe = str(ROOT / "conf" / "experiments" / "abp_faces.yaml")
    small = ["--trainer.max_steps=4", "--data.batch_size=30", "--model.generator_steps=2", "--data.image_size=16"]
    small += ["--model.generator.channels=[8, 4]", "--data.subset=all"]  # 180 training images: 6 steps' worth
    run_ddp(["--config", recipe, *small, "--trainer.callbacks+=tests.probes.RankProbe"], tmp_path)
    (run,) = run_dirs(tmp_path)
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)
    assert torch.equal(probes[0]["latents"], probes[1]["latents"])
    trained = (probes[0]["latents"] != probes[0]["initial"]).flatten(1).any(1)
    assert int(trained.sum()) == 180  # 4 steps x 2 ranks x 30 faces, stored on both ranks: every training face


@pytest.mark.slow
def test_two_process_generative_gradient_keeps_the_classifier_in_sync(tmp_path):
    """The generative then discriminative schedule under DDP; the accuracy is over the whole held-out set."""
    recipe = str(ROOT / "conf" / "experiments" / "generative_gradient_digits.yaml")
    small = ["--trainer.max_steps=4", "--data.batch_size=16", "--model.generative_schedule=[[0, 1], [2, 1], [2, 0]]"]
    small += ["--model.hmc_steps=2", "--trainer.check_val_every_n_epoch=1", "--trainer.limit_train_batches=4"]
    run_ddp(["--config", recipe, *small, "--trainer.callbacks+=tests.probes.RankProbe"], tmp_path)
    (run,) = run_dirs(tmp_path)
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_two_process_resume_continues_exactly(tmp_path):
    """3 + 3 steps with a resume in between end where 6 straight steps end: weights, every rank's chains and noise.
    (Rank 1 used to crash with a segfault here: its noise state was restored from a row view of the gathered states.)"""
    args = ["--config", TEXTURE, *TINY, "--model.n_chains=2"]
    run_ddp([*args, "--trainer.max_steps=6"], tmp_path / "straight")
    run_ddp([*args, "--trainer.max_steps=3"], tmp_path / "resumed")
    run_ddp([*args, "--trainer.max_steps=6", "--ckpt_path=last"], tmp_path / "resumed")
    (straight,) = run_dirs(tmp_path / "straight")
    (resumed,) = run_dirs(tmp_path / "resumed")  # the resumed run continued in its own directory
    assert_same_end(straight, resumed, 6)


def assert_same_end(straight: Path, resumed: Path, steps: int) -> None:
    """The two runs' ``last.ckpt`` are at ``steps`` with equal weights, every rank's chains and noise generators."""
    a, b = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (straight, resumed))
    assert a["global_step"] == b["global_step"] == steps
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key in ("bank.chains", "rng"):
        assert torch.equal(a["ebm_state"][key], b["ebm_state"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_resume_on_another_number_of_processes_deals_the_saved_chains_out_and_says_so(before, after, tmp_path):
    """Every rank of the resumed run starts from saved chains, dealt out in rank order (never from fresh ones), a
    rank without a saved noise generator gets a new seed, and one warning says all of it."""
    args = ["--config", TEXTURE, *TINY, "--model.n_chains=2", "--trainer.callbacks+=tests.probes.StartProbe"]
    run_ddp([*args, "--trainer.max_steps=3"], tmp_path, devices=before)
    (run,) = run_dirs(tmp_path)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ebm_state"]
    log = run_ddp([*args, "--trainer.max_steps=5", "--ckpt_path=last"], tmp_path, devices=after)
    said = " ".join(log.split())
    assert f"was saved by {processes(before)} and this run has {after}: the run continues from it" in said, log
    assert f"the {2 * before} saved chains (2 per process x {processes(before)}) were pooled in rank order" in said
    assert ("draw from new seeds" if after > before else "are left out") in said

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5 and ckpt["ebm_state"]["world_size"] == after
    pool = saved["bank.chains"].flatten(0, 1)
    for rank in range(after):
        newest = sorted(run.glob(f"start_*_rank{rank}.pt"))[-1]  # rank 1 of (1, 2) starts for the first time
        start = torch.load(newest, weights_only=True)
        assert start["global_step"] == 3
        assert torch.equal(start["chains"], pool[(torch.arange(2) + 2 * rank) % len(pool)])
        if rank < before:  # the saved generator continues; a new rank's is seeded afresh, apart from rank zero's
            assert torch.equal(start["rng"], saved["rng"][rank])
        else:
            assert not torch.equal(start["rng"], saved["rng"][0])
    if after > 1:  # rank 1 started from rank 0's chains; its own noise set them apart
        assert not torch.equal(ckpt["ebm_state"]["bank.chains"][0], ckpt["ebm_state"]["bank.chains"][1])
