"""Data sets as in-memory uint8 tensors, batch augmentation, and a tensor loader."""

from .datasets import DataError, ImageTensors, load_splits, split_fraction
from .loader import TensorLoader

__all__ = ["DataError", "ImageTensors", "TensorLoader", "load_splits", "split_fraction"]
