"""Plain ``nn.Module`` nets from the published architectures; no Lightning here."""

from lightning_ebm.nets.descriptors import (
    Descriptor,
    LeakyReLU,
    MultigridDescriptor,
    ObjectDescriptor,
    TextureDescriptor,
)
from lightning_ebm.nets.generators import Generator, SceneGenerator, SoundGenerator, TextureGenerator

__all__ = [
    "Descriptor",
    "Generator",
    "LeakyReLU",
    "MultigridDescriptor",
    "ObjectDescriptor",
    "SceneGenerator",
    "SoundGenerator",
    "TextureDescriptor",
    "TextureGenerator",
]
