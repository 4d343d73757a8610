"""Plain ``nn.Module`` nets from the published architectures; no Lightning here."""

from lightning_ebm.nets.activations import LeakyReLU, ReLU
from lightning_ebm.nets.classifiers import ConvClassifier
from lightning_ebm.nets.descriptors import (
    Descriptor,
    MultigridDescriptor,
    ObjectDescriptor,
    TextureDescriptor,
)
from lightning_ebm.nets.generators import Generator, SceneGenerator, SoundGenerator, TextureGenerator
from lightning_ebm.nets.observations import BlockAverage, Observation, RandomProjection

__all__ = [
    "BlockAverage",
    "ConvClassifier",
    "Descriptor",
    "Generator",
    "LeakyReLU",
    "MultigridDescriptor",
    "ObjectDescriptor",
    "Observation",
    "RandomProjection",
    "ReLU",
    "SceneGenerator",
    "SoundGenerator",
    "TextureDescriptor",
    "TextureGenerator",
]
