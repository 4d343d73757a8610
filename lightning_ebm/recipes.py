"""The shipped configs: recipes (``conf/experiments``), trainer presets (``conf/trainer``), sweeps and the SLURM job
template, found in the installed package or in a checkout, and bare names for them on the command line.

``--config texture`` is ``conf/experiments/texture.yaml`` and ``--config debug`` is ``conf/trainer/debug.yaml``,
wherever the package is installed; a path to a file is used as it is. Standard library only: ``--help`` reads the
recipe names without importing torch.
"""

from collections.abc import Sequence
from pathlib import Path

from lightning_ebm.errors import UsageError

CONF = Path(__file__).resolve().parent / "conf"
"""The configs: ``lightning_ebm/conf`` is the checkout's top-level ``conf/`` (a link there) and a copy in a wheel."""

KINDS = ("experiments", "trainer")


def names(kind: str) -> list[str]:
    """The bare names of the shipped configs of one kind (``experiments``, ``trainer``, ``sweeps``)."""
    return sorted(p.stem for p in (CONF / kind).glob("*.yaml"))


def resolve(name: str) -> str:
    """The file that a ``--config`` value names: an existing file, or the bare name of a shipped recipe or preset.

    Raises:
        UsageError: neither; the message lists the shipped names.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return name
    if "/" not in name and "\\" not in name:
        stem = name.removesuffix(".yaml")
        for kind in KINDS:
            shipped = CONF / kind / f"{stem}.yaml"
            if shipped.is_file():
                return str(shipped)
    raise UsageError(
        f"--config {name}: no such file, and no shipped recipe or preset of that name; recipes: "
        f"{', '.join(names('experiments'))}; presets: {', '.join(names('trainer'))}"
    )


def expand(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config``/``-c`` value resolved by :func:`resolve`."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve(arg.split("=", 1)[1])
    return out
