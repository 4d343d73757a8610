"""``bench/startup.py --phases``: the main job's start-up split into phases that add up (no timing is checked)."""

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import startup


def test_the_phases_of_the_start_up_are_in_order_and_add_up_to_the_total(tmp_path):
    rows = startup.phases(root=str(tmp_path))
    names = [name for name, _ in rows]
    assert names[0] == "the interpreter ran this script"
    assert names[1:4] == [
        "import torch",
        "import lightning.pytorch (torchmetrics, scipy.signal, torch._dynamo)",
        "import lightning_ebm.cli (the project's modules)",
    ]
    assert names[-2:] == ["the first training step began", "total: the command to the first training step"]
    assert "loggers started (wandb), callbacks' setup" in names and "sanity check done" in names
    seconds = [s for _, s in rows]
    assert all(s >= 0 for s in seconds[:-1])
    assert abs(sum(seconds[:-1]) - seconds[-1]) < 1e-6 and seconds[-1] > 0
    assert list((tmp_path / "runs").glob("texture/*/checkpoints"))  # the fit ran where it was told
    print(startup.phase_table(rows))
