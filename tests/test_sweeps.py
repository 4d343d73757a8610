"""wandb sweeps: every value an agent renders for our sweep files parses, rendered by wandb's own agent code."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SWEEPS = sorted((ROOT / "conf" / "sweeps").glob("*.yaml"))


def choices(spec: dict) -> list:
    """Values an agent can send for one parameter: every listed value, or a distribution's bounds."""
    if "values" in spec:
        return spec["values"]
    if "value" in spec:
        return [spec["value"]]
    return [spec["min"], spec["max"]]


def agent_command(sweep: dict, params: dict) -> list[str]:
    """The argv ``wandb agent`` runs for ``params``: wandb's macro and argument code, then its expansion loop
    (``wandb_agent.Agent._command_run``: ${env} → /usr/bin/env, ${interpreter} → python)."""
    from wandb.sdk.launch.sweeps import utils

    command = utils.create_sweep_command(list(sweep["command"]))
    rendered = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    rendered.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    argv: list[str] = []
    for chunk in map(str, command):
        argv += (rendered.get(chunk[2:-1]) or []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return argv


def resolved(args: list[str]) -> dict:
    """The config ``python -m lightning_ebm <args>`` resolves (parsed as the agent's process would, printed)."""
    from lightning_ebm.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        run([*args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def lookup(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node["init_args"][key] if key not in node and "init_args" in node else node[key]
    return node


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_value_an_agent_renders_parses_to_itself(path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    sweep = yaml.safe_load(path.read_text())
    assert sweep["command"][:4] == ["${env}", "${interpreter}", "-m", "lightning_ebm"] and "program" in sweep
    names = list(sweep["parameters"])
    grid = [choices(sweep["parameters"][n]) for n in names]
    # every value of every parameter at least once, next to the first value of the others
    combos = [[v[0] for v in grid]]
    for i, values in enumerate(grid):
        combos += [[v if j == i else grid[j][0] for j in range(len(grid))] for v in values[1:]]
    rendered_any = set()
    for combo in combos:
        params = dict(zip(names, combo))
        argv = agent_command(sweep, params)
        assert argv[:4] == ["/usr/bin/env", "python", "-m", "lightning_ebm"]
        rendered_any |= {a.split("=", 1)[1] for a in argv[4:] if a.startswith("--") and "=" in a}
        config = resolved(argv[4:])
        for name, value in params.items():
            got = lookup(config, name)
            expected = (
                [list(v) for v in value] if isinstance(value, list) and value and isinstance(value[0], list) else value
            )
            assert got == pytest.approx(expected) if isinstance(value, float) else got == expected, (name, value, got)
    if path.stem == "coopnets_digits":  # the renderings of str() that YAML reads otherwise came up, and parsed
        assert {"1e-05", "None", "True", "False"} <= rendered_any, rendered_any
