"""A misspelt ``Literal`` option is refused from Python too, with the choices and the closest one (it used to fall
through silently to another behaviour)."""

from functools import partial

import pytest

from lightning_ebm.methods import AlternatingBackprop, ContrastiveDivergence, GenerativeConvNet, GenerativeGradient
from tests.conftest import tiny_model


@pytest.mark.parametrize(
    ("cls", "option", "value", "message"),
    [
        (GenerativeConvNet, "chain_init", "zero", "choose one of 'zeros', 'reference', 'uniform'; did you mean zeros?"),
        (GenerativeConvNet, "grad_scaling", "position", "choose one of 'none', 'positions'; did you mean positions?"),
        (ContrastiveDivergence, "grad_scaling", "positon", "did you mean positions?"),  # inherited from its base
        (GenerativeGradient, "sampler", "HMC", "choose one of 'hmc', 'langevin'"),
        (AlternatingBackprop, "latent_init", "gaussian", "choose one of 'normal', 'zeros'"),
    ],
)
def test_a_misspelt_choice_is_refused_with_the_choices(cls, option, value, message):
    # the tiny descriptor where the method takes one; the default nets otherwise
    make = partial(tiny_model, cls) if issubclass(cls, GenerativeConvNet) else partial(cls, sample_shape=(1, 16, 16))
    with pytest.raises(ValueError, match=f"{option}={value!r}") as refused:
        make(**{option: value})
    assert message in str(refused.value)


def test_every_valid_choice_is_accepted():
    for chain_init in ("zeros", "reference", "uniform"):
        assert tiny_model(GenerativeConvNet, chain_init=chain_init).hparams.chain_init == chain_init
