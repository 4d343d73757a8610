"""A real single-node SLURM cluster on this machine for the requeue test: Debian's slurmctld, slurmd and munge,
started with a private configuration on ports 6817/6818 and stopped afterwards.

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
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
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
    if not (_free(6817) and _free(6818)):
        return "ports 6817 and 6818 are taken (another slurmctld or slurmd?)"
    return None


class Cluster:
    """Start munged, slurmctld and slurmd (one node: this machine, every core); ``stop`` kills them."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        for sub in ("state", "spool"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
        conf = CONF.format(
            host=host, port=6817, port2=6818, dir=folder, cpus=os.cpu_count(), memory=int(mem_kb / 1024 * 0.8)
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
        subprocess.run(["slurmd"], env=self.env, check=True)
        self.wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%t"), 60, "the node to come up")

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
        for name in ("slurmd", "slurmctld"):
            pid_file = self.dir / f"{name}.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
        if self.munged is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.munged, signal.SIGTERM)
