"""lightning_ebm: energy-based generative ConvNets (the UCLA descriptor line) as PyTorch Lightning experiments."""

__version__ = "0.1.0"
