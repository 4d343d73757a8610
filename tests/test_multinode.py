"""Two nodes simulated on this machine: each process started on its own, as a launcher on two hosts would start it
(its own ``NODE_RANK``, ``LOCAL_RANK`` 0 on both, one rendezvous address; ``num_nodes=2``, ``devices=1``), through the
console script's code under an audit of every file it writes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import DEBUG, ROOT, TEXTURE, TINY, run_dirs
from tests.test_ddp import DDP, assert_same_end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(args: list[str], root: Path, launcher: str = "env", nodes: int = 2) -> list[set[Path]]:
    """``fit ARGS`` as ``nodes`` nodes of one process each, started separately; the files each process wrote.

    ``launcher``: ``env`` sets ``NODE_RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address, as a script
    on each host would (Lightning's convention for processes it does not start); ``torchrun`` runs ``torchrun
    --nnodes N --node-rank K`` with its static rendezvous on each "host"."""
    port = free_port()
    cmd = ["-m", "tests.audited_cli", "RECORD", "fit", "--config", DEBUG, "--config", DDP, *args]
    cmd += ["--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.num_nodes={nodes}"]
    cmd += [f"--trainer.default_root_dir={root}"]
    procs, records = [], []
    for node in range(nodes):
        record = root.parent / f"{root.name}-writes-node{node}-{len(list(root.parent.glob('*-writes-*')))}.jsonl"
        records.append(record)
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        env.pop("LIGHTNING_EBM_RUN_DIR", None)
        here = [str(record) if a == "RECORD" else a for a in cmd]
        if launcher == "env":
            env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node), "LOCAL_RANK": "0"}
            env["WORLD_SIZE"] = str(nodes)
            full = [sys.executable, *here]
        else:
            full = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc-per-node=1"]
            full += [f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", *here]
        procs.append(subprocess.Popen(full, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for node, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {node}:\n{out[-4000:]}"
    written = []
    for record in records:
        lines = record.read_text().splitlines() if record.exists() else []
        written.append({Path(json.loads(line)["path"]) for line in lines})
    return written


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["env", "torchrun"])
def test_two_nodes_share_one_run_directory_and_continue_exactly(launcher, tmp_path):
    args = ["--config", TEXTURE, *TINY, "--model.n_chains=2", "--trainer.callbacks+=tests.probes.RankProbe"]
    args += ["--trainer.logger=CSVLogger", "--trainer.logger.save_dir=.", "--trainer.log_every_n_steps=1"]
    straight = run_nodes([*args, "--trainer.max_steps=6"], tmp_path / "straight", launcher)
    first = run_nodes([*args, "--trainer.max_steps=3"], tmp_path / "resumed", launcher)
    again = run_nodes([*args, "--trainer.max_steps=6", "--ckpt_path=last"], tmp_path / "resumed", launcher)

    (run,) = run_dirs(tmp_path / "straight")
    assert list((tmp_path / "straight" / "texture").iterdir()) == [run]  # node 1 made no directory of its own
    probes = [torch.load(run / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert probes[0]["world_size"] == 2
    for a, b in zip(probes[0]["params"], probes[1]["params"]):
        assert torch.equal(a, b)
    assert not torch.equal(probes[0]["chains"], probes[1]["chains"])  # each node's chains and noise are its own
    assert not torch.equal(probes[0]["rng"], probes[1]["rng"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ebm_state"]["world_size"] == 2 and ckpt["ebm_state"]["bank.chains"].shape == (2, 2, 1, 16, 16)
    for r in (0, 1):  # both global ranks' chains and noise generators are in the checkpoint
        assert torch.equal(ckpt["ebm_state"]["bank.chains"][r], probes[r]["chains"])
        assert torch.equal(ckpt["ebm_state"]["rng"][r], probes[r]["rng"])

    # exactly one process writes each file: node 0 all of them (the per-rank probes, written from C++, aside)
    assert not straight[1] & files_under(tmp_path), sorted(straight[1])
    shared = files_under(run) - {run / f"probe_rank{r}.pt" for r in (0, 1)}
    assert shared and shared <= straight[0], sorted(shared - straight[0])
    assert any(p.name == "metrics.csv" for p in shared) and (run / "config.yaml") in shared

    (resumed,) = run_dirs(tmp_path / "resumed")
    assert list((tmp_path / "resumed" / "texture").iterdir()) == [resumed]  # the resume continued in it
    for record in (first[1], again[1]):
        assert not record & files_under(tmp_path)
    assert_same_end(run, resumed, 6)
