"""LightningDataModules, one dataset family per file. They read local files and never download.

Each exposes ``sample_shape`` (linked into the model by the CLI) and train/val/test/predict loaders.
"""

from datamodules.audio import AudioDataModule
from datamodules.base import ImageDataModule
from datamodules.cifar import Cifar10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.imagenet import ImageNetDataModule
from datamodules.lfw import LFWDataModule
from datamodules.occlusion import Occlusion
from datamodules.photos import PhotoPatchesDataModule
from datamodules.textures import TextureDataModule

__all__ = [
    "AudioDataModule",
    "Cifar10DataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "LFWDataModule",
    "Occlusion",
    "PhotoPatchesDataModule",
    "TextureDataModule",
]
