"""``lightning-ebm`` commands run each in a process of its own, forked from one that has imported torch and Lightning.

A fresh ``lightning-ebm`` spends about 4 s importing torch and Lightning before it reads its arguments; a catalogue of
dozens of commands would spend minutes on that alone. :class:`ForkedCLI` starts one Python process that imports them
once, and forks it for every command: the child changes into the command's folder, takes the command's environment,
sends its output to files, and calls the console script's own entry point (``lightning_ebm.__main__.cli_main``) with
``sys.argv[0]`` set to the script, so it prints what the script prints and exits with the script's status. A child
that runs past its timeout is killed and reported as ``timeout``. ``LIGHTNING_EBM_TEST_FRESH=1`` runs every command as
the installed script itself instead (slower; the results must be the same).
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "lightning-ebm"
FRESH = os.environ.get("LIGHTNING_EBM_TEST_FRESH") == "1"

SERVER = r"""
import json, os, signal, sys, time, traceback
import lightning_ebm.cli  # noqa: F401  torch, Lightning, the methods and DataModules: imported once, before any fork
from lightning_ebm.__main__ import cli_main

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            sys.argv = [job["script"], *job["args"]]
            code = cli_main(job["args"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + job["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            rc = "timeout"
            break
        time.sleep(0.01)
    print(json.dumps({"rc": rc}), flush=True)
"""


@dataclass
class Result:
    """What a command did: its exit status (``"timeout"`` when it was killed), and its output."""

    returncode: int | str
    stdout: str
    stderr: str


def user_env(cwd: Path) -> dict[str, str]:
    """The environment of a user with no wandb account and none of the project's variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIGHTNING_EBM_"))}
    return {**env, "NETRC": str(cwd / "no-netrc"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


class ForkedCLI:
    """Runs ``lightning-ebm <args>`` commands, each in its own process (see the module's docstring)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.server = None
        if not FRESH:
            self.server = subprocess.Popen(
                [sys.executable, "-c", SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )

    def run(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        """``lightning-ebm <args>`` in ``cwd`` with ``env`` (default :func:`user_env`), killed after ``timeout`` s."""
        env = user_env(cwd) if env is None else env
        if self.server is None:
            try:
                out = subprocess.run(
                    [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
                )
            except subprocess.TimeoutExpired as late:
                return Result("timeout", str(late.stdout or ""), str(late.stderr or ""))
            return Result(out.returncode, out.stdout, out.stderr)
        self.count += 1
        files = {name: self.scratch / f"{self.count}.{name}" for name in ("stdout", "stderr")}
        job = {"args": args, "cwd": str(cwd), "env": env, "timeout": timeout, "script": str(SCRIPT)}
        self.server.stdin.write(json.dumps({**job, **{k: str(v) for k, v in files.items()}}) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the forking process ended (exit status {self.server.poll()})")
        return Result(json.loads(answer)["rc"], files["stdout"].read_text(), files["stderr"].read_text())

    def close(self) -> None:
        """End the forking process."""
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(30)
