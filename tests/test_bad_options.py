"""Inputs that used to run quietly wrong or fail with a raw error: each refused in one line that names the value."""

import pytest
import torch

from lightning_ebm.__main__ import cli_main
from lightning_ebm.argv import without_untrained
from lightning_ebm.errors import UsageError
from lightning_ebm.methods import CoopNets, GenerativeConvNet
from lightning_ebm.methods.base import check_sample_shape
from tests.conftest import DEBUG, TEXTURE, run_cli
from tests.test_console import console


def refused(capsys, args: list[str]) -> str:
    """The one line ``cli_main(args)`` prints when it refuses them with exit status 2."""
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err, err
    return err


# ------------------------------------------------------------------- validate/test/predict need a checkpoint
@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused_at_once(command, tmp_path):
    out = console(command, "--config", "texture", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr == (
        f"lightning-ebm {command}: error: {command} needs a trained model: give --ckpt_path "
        "<run>/checkpoints/last.ckpt (or --ckpt_path last, or --ckpt_path none for an untrained model)\n"
    )
    assert not any(tmp_path.iterdir())  # no PNGs of random weights


def test_print_config_needs_no_checkpoint_and_none_asks_for_an_untrained_model(capsys):
    assert cli_main(["validate", "--config", "texture", "--print_config"]) == 0
    assert "ckpt_path: null" in capsys.readouterr().out
    assert cli_main(["predict", "--config", "texture", "--ckpt_path", "none", "--print_config"]) == 0
    assert "ckpt_path: null" in capsys.readouterr().out
    args = ["predict", "--ckpt_path", "none", "--config", "x", "--ckpt_path=None", "--n", "1"]
    assert without_untrained(args) == ["predict", "--config", "x", "--n", "1"]


# ------------------------------------------------------------------ a checkpoint of another method
@pytest.fixture(scope="module")
def coopnets_ckpt(tmp_path_factory):
    from tests.methods.test_coopnets import data, make_model, trainer

    root = tmp_path_factory.mktemp("coopnets")
    fitted = trainer(root, 1)
    fitted.fit(make_model(), data())
    fitted.save_checkpoint(root / "coop.ckpt")
    return root / "coop.ckpt"


def test_a_checkpoint_of_another_method_is_named_in_python(coopnets_ckpt):
    with pytest.raises(ValueError, match=r"holds a CoopNets model, not a GenerativeConvNet: load it with Coop"):
        GenerativeConvNet.load_from_checkpoint(coopnets_ckpt)
    assert isinstance(CoopNets.load_from_checkpoint(coopnets_ckpt), CoopNets)


def test_a_checkpoint_of_another_method_is_refused_on_the_command_line(coopnets_ckpt, tmp_path):
    args = ["validate", "--config", TEXTURE, "--config", DEBUG, "--trainer.logger=false", "--ckpt_path"]
    out = console(*args, str(coopnets_ckpt), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        f"lightning-ebm validate: error: --ckpt_path {coopnets_ckpt} holds a CoopNets model; the config asks for "
        "GenerativeConvNet: drop --config/--model, or give a GenerativeConvNet checkpoint"
    )
    assert "state_dict" not in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ a zero step size
def test_a_zero_langevin_step_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^langevin_step_size=0: Langevin needs a step size δ > 0"):
        GenerativeConvNet(sample_shape=(1, 8, 8), langevin_step_size=0)
    with pytest.raises(UsageError, match=r"^langevin_step_size=0.0: Langevin needs a step size"):
        run_cli("fit", "--config", TEXTURE, "--model.langevin_step_size=0.0", root=tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no run was written


def test_a_zero_generator_step_size_is_refused():
    from tests.methods.test_coopnets import make_model

    with pytest.raises(ValueError, match=r"^generator_step_size=0: latent Langevin needs a step size δ > 0"):
        make_model(generator_step_size=0)


# ------------------------------------------------------------------ visualize --n 0
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n", "0"], "--n 0: the number of samples must be at least 1"),
        (["--steps", "-1"], "--steps -1: the number of sampler steps cannot be negative"),
        (["--leapfrog_steps", "0"], "--leapfrog_steps 0: an HMC iteration needs at least 1 leapfrog step"),
    ],
)
def test_visualize_refuses_no_samples_and_negative_steps(flags, message, capsys):
    assert message in refused(capsys, ["visualize", "--ckpt_path", "x.ckpt", *flags])


# ------------------------------------------------------------------ a config file that is no YAML
@pytest.mark.parametrize("command", ["fit", "validate", "visualize"])
def test_a_yaml_error_names_the_file_line_and_column(command, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    a: [1, 2\n  b: 3\n")
    err = refused(capsys, [command, "--config", str(bad), "--ckpt_path", "last"])
    assert f"error: --config {bad}:4:4: not valid YAML (expected ',' or ']', but got ':')" in err


# ------------------------------------------------------------------ a sample shape without its channel axis
@pytest.mark.parametrize("shape", [(32, 32), (64, 64, 3), (1, 0, 8), (1, 8.5, 8), (8,), (1, 1, 8, 8), "1x8x8"])
def test_a_sample_shape_that_is_not_c_h_w_or_c_t_is_named(shape):
    with pytest.raises(ValueError, match=r"^sample_shape=.*must be \(C, H, W\) for images or \(C, T\) for audio"):
        GenerativeConvNet(sample_shape=shape)
    with pytest.raises(ValueError) as refused_shape:
        check_sample_shape(shape)
    assert str(refused_shape.value).startswith(f"sample_shape={shape!r}: ")


@pytest.mark.parametrize("shape", [(1, 8, 8), [3, 64, 64], (1, 16000), (2, 4096)])
def test_images_and_sounds_have_a_good_sample_shape(shape):
    check_sample_shape(shape)
    assert torch.Size(shape)  # plain positive ints
