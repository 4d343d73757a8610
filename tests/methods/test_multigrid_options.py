"""``MultigridMCD(grid_options=...)``: one grid's descriptor gets its own architecture options, without a subclass."""

from functools import partial
from pathlib import Path

import pytest
import yaml

from lightning_ebm.methods import MultigridMCD
from lightning_ebm.nets import MultigridDescriptor
from tests.conftest import DEBUG, ROOT, run_cli

RECIPE = str(ROOT / "conf" / "experiments" / "multigrid_digits.yaml")


def first_widths(model: MultigridMCD) -> list[int]:
    return [net.body[0].out_channels for net in model.descriptors]


def test_grid_options_change_only_that_grids_descriptor():
    narrow = partial(MultigridDescriptor, width=0.25)
    model = MultigridMCD(narrow, grids=[4, 16], sample_shape=(1, 16, 16), grid_options={16: {"channels": [6, 8, 8, 8]}})
    assert first_widths(model) == [24, 6]  # the 4x4 net keeps the factory's width 0.25 of 96


def test_unknown_grids_and_keywords_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"grid_options names grids \[8\], but the grids are \[4, 16\]"):
        MultigridMCD(grids=[4, 16], sample_shape=(1, 16, 16), grid_options={8: {"width": 0.5}})
    with pytest.raises(
        ValueError,
        match=r"grid_options\[16\] sets 'widths', which MultigridDescriptor does not take; "
        r"its parameters: activation, batch_norm, channels, kernel_sizes, strides, width",
    ):
        MultigridMCD(grids=[4, 16], sample_shape=(1, 16, 16), grid_options={16: {"widths": [8]}})


def test_grid_options_from_the_command_line_reach_the_finest_net(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        RECIPE,
        "--config",
        DEBUG,
        "--trainer.max_steps=1",
        "--model.langevin_steps=2",
        "--model.init_args.grid_options={16: {channels: [6, 8, 8, 8]}}",
        root=tmp_path,
    )
    assert first_widths(cli.model) == [24, 6]  # the recipe's width 0.25 of 96 at 4x4
    saved = cli.model.hparams.grid_options  # the config's keys may arrive as strings ("16"): both work
    assert {int(k): v for k, v in saved.items()} == {16: {"channels": [6, 8, 8, 8]}}
    (config,) = Path(tmp_path).rglob("config.yaml")
    written = yaml.safe_load(config.read_text())["model"]["init_args"]["grid_options"]
    assert {int(k): v for k, v in written.items()} == {16: {"channels": [6, 8, 8, 8]}}  # the run's config says so
