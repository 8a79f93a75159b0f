"""sivae: scalable, interpretable variational autoencoders for single-cell genomics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sivae")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

from . import datasets, pl, pp, tl
from ._constants import KEYS
from ._errors import InputError
from .baselines import LDVAE, VAE
from .data.backed import read_backed
from .data.io import read
from .model import SIVAE, load_model

__all__ = ["KEYS", "InputError", "LDVAE", "SIVAE", "VAE", "datasets", "load_model", "pl", "pp", "read", "read_backed", "tl", "__version__"]
