"""Checks of array-like arguments shared by sivae.tl.metrics and sivae.evaluation: a numeric
matrix, labels, a boolean mask, an integer; each refuses bad input with one sentence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sivae import _params
from sivae._errors import InputError


def _matrix(x: Any, name: str) -> np.ndarray:
    # 2-D finite float matrix, at least one row and one column
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numeric matrix; got {type(x).__name__}") from err
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-D matrix; got shape {arr.shape}")
    n_bad = int((~np.isfinite(arr)).sum())
    if n_bad:
        raise InputError(f"{name} has {n_bad} NaN or infinite values; remove them first")
    return arr


def _labels(x: Any, name: str, n: int) -> np.ndarray:
    # 1-D labels of length n, no missing values, as strings so mixed types compare
    arr = np.asarray(x, dtype=object)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D; got shape {arr.shape}")
    series = pd.Series(arr)
    if len(series) != n:
        raise InputError(f"{name} has {len(series)} entries but the matrix has {n} rows")
    n_missing = int(series.isna().sum())
    if n_missing:
        raise InputError(f"{name} has {n_missing} missing values; drop those rows first")
    return series.astype(str).to_numpy()


def _mask(x: Any, name: str, n: int) -> np.ndarray:
    # 1-D boolean mask of length n (bools or 0/1)
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} must be 1-D with {n} entries; got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(pd.Series(arr).to_numpy(dtype=object), [0, 1, True, False]).all():
            raise InputError(f"{name} must hold booleans (or 0/1); got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    # fold counts and k beyond any number of cells refused here: numpy cannot hold 2**70
    return _params.integer(value, name, minimum=minimum, maximum=2**31)
