"""Options at the unit level: ``--ckpt_path none`` and the sample-shape check. The command line's refusals are in the
catalogue, :mod:`tests.test_bad_inputs`."""

import pytest
import torch

from lightning_ebm.__main__ import cli_main
from lightning_ebm.argv import without_untrained
from lightning_ebm.methods import GenerativeConvNet
from lightning_ebm.methods.base import check_sample_shape


# ------------------------------------------------------------------- validate/test/predict need a checkpoint
def test_print_config_needs_no_checkpoint_and_none_asks_for_an_untrained_model(capsys):
    assert cli_main(["validate", "--config", "texture", "--print_config"]) == 0
    assert "ckpt_path: null" in capsys.readouterr().out
    assert cli_main(["predict", "--config", "texture", "--ckpt_path", "none", "--print_config"]) == 0
    assert "ckpt_path: null" in capsys.readouterr().out
    args = ["predict", "--ckpt_path", "none", "--config", "x", "--ckpt_path=None", "--n", "1"]
    assert without_untrained(args) == ["predict", "--config", "x", "--n", "1"]


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
