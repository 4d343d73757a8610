"""A real SLURM cluster on this machine for the requeue tests: Debian's slurmctld, one or two slurmd and munge,
started with a private configuration on ports 6817-6819 and stopped afterwards.

The test runs where SLURM's daemons are installed already. Where they are not, it is skipped, unless
``LIGHTNING_EBM_TEST_SLURM=install`` asks to install them with apt-get (root, Debian; ``.ci/run`` sets it): that
installs system packages, so ``make test`` never does it on its own."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=lightning-ebm-test
SlurmctldHost={host}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort={port}
SlurmdPort={port2}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# look at the queue every 2 s, not 60: a requeued job then starts seconds after its StartTime
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""

DAEMONS = ("slurmctld", "slurmd", "munged")
INSTALL_ENV = "LIGHTNING_EBM_TEST_SLURM"


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def unavailable() -> str | None:
    """Why a private SLURM cannot run here, or ``None``."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root on Linux"
    if os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_CONF"):
        return "already inside a SLURM job or configured cluster: not starting a private one"
    if any(shutil.which(d) is None for d in ("slurmctld", "slurmd", "munged", "sbatch")):
        if os.environ.get(INSTALL_ENV) != "install":
            return f"slurmctld, slurmd, munge and sbatch are not installed ({INSTALL_ENV}=install installs them)"
        if shutil.which("apt-get") is None:
            return "slurmctld, slurmd, munge and sbatch are not installed and there is no apt-get to install them"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        packages = ["slurmctld", "slurmd", "munge", "slurm-client"]
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        for cmd in (["apt-get", "update", "-q"], install):
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            except subprocess.TimeoutExpired:
                return f"{' '.join(cmd[:2])} timed out: no package registry?"
            if out.returncode != 0:
                return f"{' '.join(cmd[:2])} failed: {out.stderr.strip()[-300:]}"
    if not (_free(6817) and _free(6818) and _free(6819)):
        return "ports 6817, 6818 and 6819 are taken (another slurmctld or slurmd?)"
    return None


class Cluster:
    """Start munged, slurmctld and one slurmd per node; ``stop`` kills them.

    Every node is this machine with all its cores. The first is named after the host, so that the address Lightning's
    SLURM environment takes from the job's node list resolves. A second node (``nodes=2``) is a second slurmd on its
    own port, ``slurmd -N <host>-b``, whose ``NodeHostname`` is ``localhost``: SLURM built without multiple-slurmd
    support (Debian's) refuses two nodes with the same host name, but not two names of one machine. ``self.nodes`` is
    how many came up: a second slurmd that cannot start leaves one, and ``self.refused`` says why.
    """

    def __init__(self, folder: Path, nodes: int = 1) -> None:
        self.dir = folder
        (folder / "state").mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
        resources = f"CPUs={os.cpu_count()} RealMemory={int(mem_kb / 1024 * 0.8)} State=UNKNOWN"
        self.names = [host, f"{host}-b"][:nodes]
        lines = [f"NodeName={host} {resources}"]
        if nodes > 1:
            lines.append(f"NodeName={host}-b NodeHostname=localhost NodeAddr=127.0.0.1 Port=6819 {resources}")
        for name in self.names:
            (folder / f"spool-{name}").mkdir(exist_ok=True)
        conf = CONF.format(
            host=host, port=6817, port2=6818, dir=folder, nodes="\n".join(lines), names=",".join(self.names)
        )
        (folder / "slurm.conf").write_text(conf)
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        self.munged: int | None = None
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            self.munged = int(Path("/run/munge/munged.pid").read_text())
        subprocess.run(["slurmctld"], env=self.env, check=True)
        subprocess.run(["slurmd", "-N", host], env=self.env, check=True)
        self.refused: str | None = None
        if nodes > 1:
            second = subprocess.run(["slurmd", "-N", f"{host}-b"], env=self.env, capture_output=True, text=True)
            if second.returncode != 0:
                self.refused = (second.stderr or second.stdout).strip()[-500:] or f"exit status {second.returncode}"
        self.wait(lambda: self.idle() >= 1, 60, "the first node to come up")
        if nodes > 1 and self.refused is None:
            try:
                self.wait(lambda: self.idle() >= 2, 30, "the second node to come up")
            except TimeoutError:
                self.refused = f"the second slurmd never came up: {self.logs()[-600:]}"
        self.nodes = 1 if self.refused else nodes

    def idle(self) -> int:
        """How many nodes are idle."""
        return self.run("sinfo", "-h", "-N", "-o", "%t").split().count("idle")

    def run(self, *cmd: str) -> str:
        """A SLURM command against this cluster; its output."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ...)."""
        fields = self.run("scontrol", "show", "job", job_id).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def logs(self) -> str:
        """The ends of slurmctld's and slurmd's logs."""
        return "".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.dir.glob("*.log")))

    def wait(self, condition, seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError(f"waited {seconds} s for {what}; SLURM logs:\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        for pid_file in [*(self.dir / f"slurmd-{n}.pid" for n in self.names), self.dir / "slurmctld.pid"]:
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
        if self.munged is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.munged, signal.SIGTERM)
