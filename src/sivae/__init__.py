"""sivae: scalable, interpretable variational autoencoders for single-cell genomics.

The public names load on first use (PEP 562), so ``import sivae`` and the ``sivae`` command
start without importing torch and scanpy; the command line can then answer Ctrl-C during its
start-up with one line instead of a traceback from inside an import.
"""

from __future__ import annotations

import importlib
from typing import Any

# the one place the version is written: setuptools reads it when it builds (pyproject.toml), and
# saved models record it, also from a source tree that was never installed
__version__ = "0.1.0"

from ._constants import KEYS
from ._errors import InputError

# public name -> the module that defines it
_LAZY = {
    "SIVAE": ".models.model", "VAE": ".models.baselines", "LDVAE": ".models.baselines", "load_model": ".models.saving",
    "read": ".data.io", "read_backed": ".data.backed",
    "datasets": None, "pl": None, "pp": None, "tl": None,
}

__all__ = ["KEYS", "InputError", "LDVAE", "SIVAE", "VAE", "datasets", "load_model", "pl", "pp", "read",
           "read_backed", "tl", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sivae' has no attribute {name!r}")
    if name == "load_model":  # the model classes register themselves when imported
        importlib.import_module(".models.model", __name__)
        importlib.import_module(".models.baselines", __name__)
    source = _LAZY[name]
    module = importlib.import_module(source or f".{name}", __name__)
    value = module if source is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
