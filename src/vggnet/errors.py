"""The exception types that mean bad input: a leaf of the package.

Every error a user can cause (an unknown model, a recipe key that does not exist, a folder
with no images, weights of another architecture, an image that cannot be decoded) is a
:class:`VggnetError`. The command line prints such errors as one line; anything else is a bug
and keeps its traceback. The concrete types also derive from the built-in type that fits
(``ValueError``, ``RuntimeError``), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class VggnetError(Exception):
    """Base of every error that means bad input; its message says what to do."""


class ConfigError(VggnetError, ValueError):
    """A recipe, flag or model option that is not valid; the message names the key."""


class UnknownModelError(ConfigError):
    """An unknown model name; the message lists the valid names and the closest match."""


class DataError(VggnetError, ValueError):
    """A data set that cannot be found or read; the message says what to do."""


class ImageReadError(VggnetError, ValueError):
    """A file that is not a readable image; the message is one line."""


class NotAnImageError(ImageReadError):
    """Bytes that no image decoder recognises (a text file, a PDF, a renamed archive)."""


class ImageTooLargeError(ImageReadError):
    """An image with more pixels than is safe to decode (a decompression bomb)."""


class WeightsError(VggnetError, ValueError):
    """A weights file or checkpoint that cannot be used as asked."""


class WeightsMismatchError(WeightsError):
    """Weights that belong to another architecture (the message names the one they fit)."""


class TrainingError(VggnetError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept."""


class ExportError(VggnetError, RuntimeError):
    """An exported model does not reproduce the PyTorch model."""


class UsageError(VggnetError):
    """Command-line arguments that do not fit together."""


class InputError(VggnetError, ValueError):
    """A tensor that a model cannot take (too small, wrong channels or dimensions)."""


class StorageError(VggnetError, OSError):
    """A file could not be written (disk full, read-only folder, no permission); the previous
    version of the file is kept, and the message says so."""

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else super().__str__()
