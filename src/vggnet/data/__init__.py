"""Data sets as in-memory uint8 tensors, batch augmentation, and a tensor loader."""

from ..errors import DataError
from .datasets import ImageTensors, load_splits, split_fraction
from .loader import TensorLoader

__all__ = ["DataError", "ImageTensors", "TensorLoader", "load_splits", "split_fraction"]
