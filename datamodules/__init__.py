"""LightningDataModules, one dataset family per file. They read local files and never download."""

from datamodules.textures import TextureDataModule

__all__ = ["TextureDataModule"]
