"""A network of one's own, outside the project's class hierarchy: the README's example runs as written, and a net
that does not return one score per sample is refused with the class, the shape and what to do."""

import os
import re
import shlex
import subprocess

import pytest
import torch
from torch import nn

from lightning_ebm.errors import UsageError
from lightning_ebm.nets.descriptors import build_descriptor
from tests.conftest import DEBUG, ROOT, TEXTURE, run_cli
from tests.test_console import SCRIPT

SMALL = ["--trainer.max_steps=2", "--data.image_size=40", "--data.crop_size=32", "--model.langevin_steps=2"]


def readme_example() -> tuple[str, str]:
    """The Python file and the command of the README's "Your own network" section."""
    section = (ROOT / "README.md").read_text().split("## Your own network", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    (command,) = re.findall(r"```bash\n(.*?)\n```", section, re.DOTALL)
    return code, command


def test_the_readme_custom_net_fits_through_the_console_script(tmp_path):
    code, command = readme_example()
    assert "PYTHONPATH=. lightning-ebm fit" in command and "class_path=mynet." in command
    (tmp_path / "mynet.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIGHTNING_EBM_", "PYTHONPATH"))}
    env["PATH"] = f"{SCRIPT.parent}{os.pathsep}{env['PATH']}"
    script = f"{command} --config debug {shlex.join(SMALL)}"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (ckpt,) = tmp_path.glob("runs/texture/*/checkpoints/last.ckpt")
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert "mynet.SmallNet" in str(hparams)


class ScoreMap(nn.Module):
    """Returns ``(B, K, 1, 1)`` (``out="map"``), ``(B, K)`` (``"flat"``) or, as a descriptor must, ``(B,)``."""

    def __init__(self, sample_shape, k: int = 1, out: str = "map"):
        super().__init__()
        self.conv, self.out = nn.Conv2d(sample_shape[0], k, 3), out
        self.norm = nn.BatchNorm2d(k)

    def forward(self, x):
        y = self.norm(self.conv(x)).mean((2, 3), keepdim=True)
        return {"map": y, "flat": y.flatten(1), "score": y.flatten(1).sum(1)}[self.out]


@pytest.mark.parametrize(("k", "out", "shape"), [(1, "map", r"\(2, 1, 1, 1\)"), (3, "flat", r"\(2, 3\)")])
def test_a_net_without_one_score_per_sample_is_refused_by_name(k, out, shape):
    with pytest.raises(ValueError, match=rf"ScoreMap returned {shape} .*one score per sample: \(B,\), e\.g\. by summ"):
        build_descriptor(lambda s: ScoreMap(s, k, out), (1, 8, 8))


def test_the_check_leaves_the_net_as_built():
    net = build_descriptor(lambda s: ScoreMap(s, 2, "score"), (1, 8, 8))
    assert net.training and int(net.norm.num_batches_tracked) == 0  # eval mode for the check only


def test_the_cli_refuses_a_wrong_shape_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "badnet.py").write_text(
        "from torch import nn\n\n\nclass Bad(nn.Module):\n"
        "    def __init__(self, sample_shape):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(sample_shape[0], 4, 3)\n\n"
        "    def forward(self, x):\n        return self.conv(x).sum((2, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"^Bad returned \(2, 4\) for a batch of 2 samples of shape \(1, 32, 32\)"):
        run_cli("fit", "--config", TEXTURE, "--config", DEBUG, "--model.net=badnet.Bad", *SMALL, root=tmp_path)
