"""Plain ``nn.Module`` nets from the published architectures; no Lightning here."""

from lightning_ebm.nets.descriptors import Descriptor, LeakyReLU, ObjectDescriptor, TextureDescriptor

__all__ = ["Descriptor", "LeakyReLU", "ObjectDescriptor", "TextureDescriptor"]
