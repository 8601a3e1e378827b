"""EmerDiff on Stable Diffusion via diffusers: unsupervised, training-free image segmentation."""

from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.images import ImageError, load_image
from segmentor.loading import DiffusionModel, ModelLoadError, load_model
from segmentor.result import Segment, Segmentation

__all__ = [
    "DiffusionModel",
    "EmerDiffConfig",
    "EmerDiffSegmentor",
    "ImageError",
    "ModelLoadError",
    "Segment",
    "Segmentation",
    "load_image",
    "load_model",
]
