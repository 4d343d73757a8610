"""One LightningModule per learning method, all subclasses of :class:`EBMModule`."""

from lightning_ebm.methods.alternating_backprop import AlternatingBackprop
from lightning_ebm.methods.base import DivergenceError, EBMModule
from lightning_ebm.methods.contrastive_divergence import ContrastiveDivergence
from lightning_ebm.methods.coopnets import CoopNets
from lightning_ebm.methods.generative_convnet import GenerativeConvNet
from lightning_ebm.methods.generative_gradient import GenerativeGradient
from lightning_ebm.methods.multigrid import MultigridMCD

__all__ = [
    "AlternatingBackprop",
    "ContrastiveDivergence",
    "CoopNets",
    "DivergenceError",
    "EBMModule",
    "GenerativeConvNet",
    "GenerativeGradient",
    "MultigridMCD",
]
