"""Every setting of a model, in one frozen dataclass saved whole to config.json, and its checks.

Settings are checked for type and range when a model is built and when a saved config.json is
read back, so a hand-edited or foreign file is refused with one sentence rather than a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from . import _params
from ._errors import InputError
from ._params import check_memory, is_int
from .data.feature_input import METHODS as FEATURE_INPUT_METHODS
from .module import LIKELIHOODS, VARIANCES


@dataclass(frozen=True)
class ModelConfig:
    """Every constructor argument of a model; saved whole to config.json."""

    n_latent: int = 2
    gamma: float = 0.05
    likelihood: str = "gaussian"
    linear: bool = False
    variance: str = "cell"
    encoder_hidden: tuple[int, ...] = (1024, 512, 128)
    decoder_hidden: tuple[int, ...] | None = None  # None: the encoder's, reversed
    feature_input: str = "pca"
    c_red: int = 100
    # PCA of X^T over at most this many training cells (a uniform sample): its cost grows with
    # the cells it reads, and 50,000 cells pin down the features' covariances; None: all.
    feature_input_cells: int | None = 50_000
    cell_type_key: str | None = None
    batch_size: int = 256
    feature_batch_size: int | None = None
    learning_rate: float = 1e-3
    l2: float = 1e-3
    holdout_fraction: float = 0.1
    patience: int = 20
    seed: int = 0

    @property
    def decoder_sizes(self) -> tuple[int, ...]:
        return tuple(self.decoder_hidden) if self.decoder_hidden is not None else tuple(reversed(self.encoder_hidden))

    @classmethod
    def from_saved(cls, values: dict[str, Any], path: Any) -> ModelConfig:
        """The settings in a saved config.json, refusing unknown ones and values of the wrong type."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{path}/config.json has unknown settings {unknown}; was it written by a newer sivae?")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            config = cls(**values)
            config.check()
        except InputError as err:
            raise InputError(f"{path}/config.json is invalid: {err}; re-save the model") from err
        return config

    def check(self) -> None:
        """Refuse impossible settings, and values of the wrong type, with one sentence each."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name))
        if self.n_latent < 1:
            raise InputError(f"n_latent must be at least 1, got {self.n_latent}")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.variance not in VARIANCES:
            raise InputError(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.feature_input not in FEATURE_INPUT_METHODS:
            raise InputError(f"feature_input must be one of {FEATURE_INPUT_METHODS}, got {self.feature_input!r}")
        if not 0 <= self.gamma < math.inf:  # also refuses nan
            raise InputError(f"gamma must be a finite number >= 0, got {self.gamma}")
        if not 0 < self.learning_rate <= 1:
            raise InputError(f"learning_rate must be in (0, 1] (Adam diverges beyond; 1e-3 is usual), "
                             f"got {self.learning_rate}")
        if not 0 <= self.l2 < math.inf:
            raise InputError(f"l2 must be a finite number >= 0, got {self.l2}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise InputError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        sizes = [*self.encoder_hidden, *self.decoder_sizes, self.batch_size, self.c_red, self.patience]
        optional = [v for v in (self.feature_batch_size, self.feature_input_cells) if v is not None]
        if any(s < 1 for s in [*sizes, *optional]) or not self.encoder_hidden:
            raise InputError("hidden sizes, batch_size, feature_batch_size, feature_input_cells, "
                             "c_red and patience must be positive integers")


# the type each setting takes: ints, floats (ints accepted), strings, tuples of ints, or None
_INTS = ("n_latent", "c_red", "batch_size", "patience", "seed")
_OPTIONAL_INTS = ("feature_input_cells", "feature_batch_size")
_FLOATS = ("gamma", "learning_rate", "l2", "holdout_fraction")
_STRINGS = ("likelihood", "variance", "feature_input")


def _check_type(name: str, value: Any) -> None:
    if name in _INTS or (name in _OPTIONAL_INTS and value is not None):
        ok = is_int(value)
        expected = "an integer"
    elif name in _FLOATS:
        ok = is_int(value) or isinstance(value, (float, np.floating))
        expected = "a number"
    elif name in _STRINGS or (name == "cell_type_key" and value is not None):
        ok, expected = isinstance(value, str), "a string"
    elif name == "linear":
        ok, expected = isinstance(value, (bool, np.bool_)), "True or False"
    elif name in ("encoder_hidden", "decoder_hidden") and not (name == "decoder_hidden" and value is None):
        ok = isinstance(value, (tuple, list)) and all(is_int(v) for v in value)
        expected = "a list of integer layer widths"
    else:
        ok, expected = True, ""
    if not ok:
        raise InputError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


def check_fits_in_memory(module: torch.nn.Module, what: str) -> None:
    """Refuse a network whose weights (and Adam's two moments) cannot fit in this process's memory."""
    n = sum(p.numel() for p in module.parameters())
    check_memory(4 * n * 4, f"{what} has {n:,} weights and", "choose smaller hidden sizes")  # float32
    # weights, gradients and Adam's two moments


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks CUDA when present, else the CPU; under torchrun, CUDA is GPU ``LOCAL_RANK``;
    devices that cannot hold data ("meta") are refused (see sivae._params.device)."""
    return _params.device(device)
