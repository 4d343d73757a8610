"""Two-process CPU DDP (gloo) through the CLI in a subprocess, as a user launches it."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import DEBUG, ROOT, TEXTURE, TINY, run_dirs

DDP = str(ROOT / "conf" / "trainer" / "ddp.yaml")


@pytest.mark.slow
def test_two_process_fit_keeps_weights_in_sync_and_noise_apart(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "lightning_ebm",
        "fit",
        "--config",
        TEXTURE,
        "--config",
        DEBUG,
        "--config",
        DDP,
        *TINY,
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_steps=3",
        "--trainer.callbacks+=tests.probes.RankProbe",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    (run,) = run_dirs(tmp_path)  # both ranks wrote into one run directory
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert probes[0]["world_size"] == 2
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)  # gradients were all-reduced: sampling with frozen parameters broke nothing
    assert not torch.equal(probes[0]["chains"], probes[1]["chains"])  # each rank drew its own noise
    assert not torch.equal(probes[0]["generator"], probes[1]["generator"])

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["ebm_state"]
    assert state["world_size"] == 2 and state["bank.chains"].shape == (2, 2, 1, 16, 16)
    for r in (0, 1):  # every rank's chains are in the checkpoint, not only rank zero's
        assert torch.equal(state["bank.chains"][r], probes[r]["chains"])
