"""Small checks that refuse bad input with one sentence, before any training starts.

Every matrix check accepts a dense numpy array, a scipy.sparse matrix or array, or a backed
(on-disk) dataset, and never densifies a whole matrix: sparse matrices are checked through their
stored values, dense ones a block of rows at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._constants import KEYS
from .._errors import InputError
from .structure import check_dtype, check_structure

_COUNTS = KEYS.COUNTS

__all__ = [
    "MIN_HOLDOUT_CELLS",
    "MIN_TRAIN_CELLS",
    "check_anndata_matrices",
    "check_counts",
    "check_finite",
    "check_matrix",
    "check_not_empty",
    "check_size",
    "check_unique_names",
    "constant_features",
]

# Early stopping compares a held-out loss between epochs; below 2 cells it is noise.
MIN_HOLDOUT_CELLS = 2
# Fewest training cells for any model, whatever K and C_red ask for.
MIN_TRAIN_CELLS = 10
# Dense matrices are scanned in blocks of about this many values, to bound temporary memory.
_BLOCK_VALUES = 1 << 22


def _row_blocks(X: Any) -> Iterator[Any]:
    # yields row blocks of a dense array, an h5py dataset or a backed sparse dataset
    n_rows, n_cols = X.shape
    step = max(1, _BLOCK_VALUES // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield X[start : start + step]


def _canonical(X: Any) -> sp.csr_matrix | sp.csc_matrix:
    # csr/csc with summed duplicates, so stored values are the matrix's values
    if X.format not in ("csr", "csc"):
        X = X.tocsr()
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def _value_blocks(X: Any) -> Iterator[np.ndarray]:
    # the matrix's values in blocks; a sparse matrix's implicit zeros are left out
    if sp.issparse(X):
        yield _canonical(X).data
        return
    for block in _row_blocks(X):  # dense array, h5py dataset or anndata's backed sparse dataset
        yield _canonical(block).data if sp.issparse(block) else np.asarray(block)


def check_matrix(X: Any, where: str) -> None:
    """Refuse a matrix that no library may touch: values that are not real numbers, or a sparse
    matrix whose stored structure is inconsistent (see `sivae.data.structure`).

    Every path that reads a matrix calls this first (`sivae.read`, backed files, the checks of
    training, embedding and preprocessing). It costs one vectorised pass over a sparse matrix's
    indices and nothing for a dense one.

    Parameters
    ----------
    X
        Dense array, scipy sparse matrix or array, h5py dataset or anndata backed dataset.
    where
        How to name the matrix in the message, e.g. ``"adata.X"``.

    Raises
    ------
    InputError
        Naming the problem, in one sentence.
    """
    if X is None:
        return
    if not hasattr(X, "dtype"):
        X = np.asarray(X)
    check_dtype(X.dtype, where)
    check_structure(X, where)


def check_anndata_matrices(adata: AnnData) -> None:
    """`check_matrix` on ``adata.X``, and the structure of every other sparse matrix anndata may
    subset (``layers``, ``raw.X``, ``obsm``, ``varm``, ``obsp``, ``varp``): any ``adata[...]``
    touches them all."""
    check_matrix(adata.X, "adata.X")
    # the others are checked for structure only: a layer of text harms nothing until it is used
    for where, matrix in anndata_matrices(adata)[1:]:
        check_structure(matrix, where)


def anndata_matrices(adata: AnnData) -> list[tuple[str, Any]]:
    """(name, matrix) of ``X``, each layer, ``raw.X`` and each ``obsm``/``varm``/``obsp``/``varp`` entry."""
    found = [("adata.X", adata.X), *((f"adata.layers[{k!r}]", v) for k, v in adata.layers.items())]
    if adata.raw is not None:
        found.append(("adata.raw.X", adata.raw.X))
    for attr in ("obsm", "varm", "obsp", "varp"):
        found += [(f"adata.{attr}[{k!r}]", v) for k, v in getattr(adata, attr).items()]
    return found


def _is_integer_dtype(X: Any) -> bool:
    return np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.bool_)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_COUNT = 2**31 - 1  # no cell holds more molecules of one feature; above it the NB overflows


def check_finite(X: Any, where: str) -> None:
    """Refuse a matrix that holds NaN or infinite values.

    Parameters
    ----------
    X
        Dense, sparse or backed matrix.
    where
        How to name the matrix in the message, e.g. ``"adata.X"``.

    Raises
    ------
    InputError
        Naming how many NaN and how many Inf values there are.
    """
    check_matrix(X, where)
    if _is_integer_dtype(X):
        return
    n_nan = n_inf = n_huge = 0
    example = 0.0
    for values in _value_blocks(X):
        n_nan += int(np.count_nonzero(np.isnan(values)))
        n_inf += int(np.count_nonzero(np.isinf(values)))
        # models compute in float32: a float64 value beyond its range would become infinite
        huge = np.isfinite(values) & (np.abs(values) > _FLOAT32_MAX)
        if huge.any():
            n_huge += int(np.count_nonzero(huge))
            example = float(values[huge].flat[0])
    if n_nan or n_inf:
        parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
        raise InputError(
            f"{' and '.join(parts)} values in {where}; remove or impute them before training"
        )
    if n_huge:
        raise InputError(f"{n_huge} values in {where} (e.g. {example:.3g}) are beyond float32's range "
                         "and would become infinite in training; rescale or remove them")


def check_not_empty(adata: AnnData) -> None:
    """Refuse an AnnData without cells or without features.

    Raises
    ------
    InputError
        If ``adata`` has 0 cells or 0 features.
    """
    n_obs, n_vars = adata.shape
    if n_obs == 0 or n_vars == 0:
        empty = "cells" if n_obs == 0 else "features"
        raise InputError(
            f"adata has 0 {empty} (shape {n_obs} x {n_vars}); check the file and any filtering "
            "applied before this step"
        )


def check_unique_names(adata: AnnData) -> None:
    """Refuse duplicate cell names (``obs_names``) or feature names (``var_names``).

    Raises
    ------
    InputError
        Naming a few duplicates and the call that makes the names unique.
    """
    for axis, names, kind in (
        ("obs", adata.obs_names, "cell"),
        ("var", adata.var_names, "feature"),
    ):
        dup = names[names.duplicated()].unique()
        if len(dup):
            examples = ", ".join(repr(str(n)) for n in dup[:3])
            raise InputError(
                f"{len(dup)} duplicate {kind} names in adata.{axis}_names (e.g. {examples}); "
                f"call adata.{axis}_names_make_unique() first"
            )


def check_counts(X: Any, where: str, *, hint: str | None = None) -> None:
    """Refuse a matrix that is not raw counts: negative or non-integer values.

    Parameters
    ----------
    X
        Dense, sparse or backed matrix (assumed finite; see `check_finite`).
    where
        How to name the matrix in the message, e.g. ``"adata.layers['counts']"``.
    hint
        What the user should do instead, ending the message; by default, to pass the raw,
        unnormalised counts.

    Raises
    ------
    InputError
        Naming how many negative or non-integer values there are and an example.
    """
    check_matrix(X, where)
    fix = hint or "pass the raw, unnormalised counts"
    if _is_integer_dtype(X):
        if not np.issubdtype(X.dtype, np.unsignedinteger) and not np.issubdtype(X.dtype, np.bool_):
            n_neg = sum(int(np.count_nonzero(v < 0)) for v in _value_blocks(X))
            if n_neg:
                raise InputError(
                    f"{n_neg} negative values in {where}, which must hold counts; {fix}"
                )
        return
    n_neg = n_frac = 0
    example = None
    for values in _value_blocks(X):
        n_neg += int(np.count_nonzero(values < 0))
        frac = values != np.rint(values)
        n_frac += int(np.count_nonzero(frac))
        if example is None and frac.any():
            example = float(values[frac].flat[0])
    if n_neg:
        raise InputError(f"{n_neg} negative values in {where}, which must hold counts; {fix}")
    n_big = sum(int(np.count_nonzero(values > _MAX_COUNT)) for values in _value_blocks(X))
    if n_big:
        raise InputError(f"{n_big} values in {where} exceed {_MAX_COUNT:,}, more molecules than a cell "
                         f"holds; {fix}")
    if n_frac:
        raise InputError(
            f"{n_frac} non-integer values in {where} (e.g. {example:.4g}), which must hold "
            f"counts; {fix}"
        )


def constant_features(X: Any) -> np.ndarray:
    """Mask of the features (columns) that take one value across all cells.

    All-zero features count as constant. Exact equality is used: a column is constant when its
    minimum equals its maximum.

    Parameters
    ----------
    X
        Dense, sparse or backed matrix, cells x features (assumed finite).

    Returns
    -------
    numpy.ndarray
        Boolean array of length ``X.shape[1]``, True for constant features.
    """
    n_rows, n_cols = X.shape
    if n_rows == 0:
        return np.ones(n_cols, dtype=bool)
    if sp.issparse(X):
        lo, hi = _sparse_column_min_max(_canonical(X))
    else:
        lo = np.full(n_cols, np.inf)
        hi = np.full(n_cols, -np.inf)
        for block in _row_blocks(X):
            if sp.issparse(block):
                b_lo, b_hi = _sparse_column_min_max(_canonical(block))
            else:
                block = np.asarray(block)
                b_lo, b_hi = block.min(axis=0), block.max(axis=0)
            np.minimum(lo, b_lo, out=lo)
            np.maximum(hi, b_hi, out=hi)
    return lo == hi


def _sparse_column_min_max(X: sp.csr_matrix | sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    # per-column min and max from stored values, without converting csr to csc
    n_rows, n_cols = X.shape
    if X.format == "csr":
        cols = X.indices
    else:
        cols = np.repeat(np.arange(n_cols), np.diff(X.indptr))
    data = X.data.view(np.uint8) if X.data.dtype == np.bool_ else X.data
    # accumulate in the data's own dtype: ufunc.at is many times slower when it must cast
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        lo, hi = np.full(n_cols, info.max, data.dtype), np.full(n_cols, info.min, data.dtype)
    else:
        lo, hi = np.full(n_cols, np.inf, data.dtype), np.full(n_cols, -np.inf, data.dtype)
    np.minimum.at(lo, cols, data)
    np.maximum.at(hi, cols, data)
    lo, hi = lo.astype(np.float64), hi.astype(np.float64)
    has_zero = np.bincount(cols, minlength=n_cols) < n_rows  # some entries are implicit zeros
    lo[has_zero] = np.minimum(lo[has_zero], 0.0)
    hi[has_zero] = np.maximum(hi[has_zero], 0.0)
    return lo, hi


def split_sizes(n_cells: int, holdout_fraction: float) -> tuple[int, int]:
    """(training, held-out) cell counts of a model's split; the held-out count is rounded down."""
    n_holdout = math.floor(n_cells * holdout_fraction)
    return n_cells - n_holdout, n_holdout


def check_size(n_cells: int, *, n_latent: int, c_red: int | None, holdout_fraction: float) -> None:
    """Refuse a dataset with too few cells for the requested model.

    The cells are split into ``floor(n_cells * holdout_fraction)`` held-out cells (for early
    stopping) and the rest for training. Requirements:

    - at least `MIN_HOLDOUT_CELLS` (2) held-out cells, unless ``holdout_fraction`` is 0
      (no held-out set);
    - at least ``max(n_latent + 1, c_red or 0, MIN_TRAIN_CELLS)`` training cells: a K-dim
      embedding needs more than K cells to be non-degenerate, the feature-wise encoder's input
      is reduced to C_red values computed from training cells (at most one PCA component per
      cell), and below `MIN_TRAIN_CELLS` (10) no model is worth fitting.

    Parameters
    ----------
    n_cells
        Number of cells in the data.
    n_latent
        Latent dimensions K (at least 1).
    c_red
        Reduced size C_red of the feature-wise encoder's input, or None if not used.
    holdout_fraction
        Fraction of cells held out, in [0, 1) here (where the split's arithmetic is defined); a
        model's setting is narrower, [0, 0.5), declared in `sivae.models.config.ModelConfig`.

    Raises
    ------
    InputError
        If an argument is out of range or there are too few cells; the message says how many
        cells were needed and how many were received.
    """
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise InputError(f"n_latent must be a positive integer, got {n_latent!r}")
    if c_red is not None and (not isinstance(c_red, (int, np.integer)) or c_red < 1):
        raise InputError(f"c_red must be a positive integer or None, got {c_red!r}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise InputError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    min_train = max(n_latent + 1, c_red or 0, MIN_TRAIN_CELLS)
    n_train, n_holdout = split_sizes(n_cells, holdout_fraction)
    short_holdout = holdout_fraction > 0 and n_holdout < MIN_HOLDOUT_CELLS
    if n_train >= min_train and not short_holdout:
        return
    needed = _min_cells(min_train, holdout_fraction)
    enough_for_both = n_cells - MIN_HOLDOUT_CELLS >= min_train
    fix = " or a larger holdout_fraction" if short_holdout and enough_for_both else ""
    if n_train < min_train:
        fix += " or a smaller n_latent or c_red" if min_train > MIN_TRAIN_CELLS else ""
    why = f"at least {min_train} training cells (n_latent={n_latent}, c_red={c_red})" + (
        f" and {MIN_HOLDOUT_CELLS} held-out cells" if holdout_fraction > 0 else ""
    )
    raise InputError(
        f"{n_cells} cells are too few: with holdout_fraction={holdout_fraction} the model needs "
        f"{why}, i.e. at least {needed} cells, but would get {n_train} training and {n_holdout} "
        f"held-out cells; use more cells{fix}"
    )


def _min_cells(min_train: int, holdout_fraction: float) -> int:
    # smallest n_cells meeting both requirements; both counts never decrease as n grows, so
    # stepping up from a lower bound finds it
    # (n_train > n * (1 - f) - 1, so n_train >= m needs n > (m - 1) / (1 - f))
    n = max(min_train, math.floor((min_train - 1) / (1.0 - holdout_fraction)) - 1)
    if holdout_fraction > 0:
        n = max(n, math.floor(MIN_HOLDOUT_CELLS / holdout_fraction) - 1)
    while True:
        n_train, n_holdout = split_sizes(n, holdout_fraction)
        if n_train >= min_train and (holdout_fraction == 0 or n_holdout >= MIN_HOLDOUT_CELLS):
            return n
        n += 1


def check_training_data(adata: Any, *, backed: bool, likelihood: str, n_latent: int, c_red: int | None,
                        holdout_fraction: float, cell_type_key: str | None) -> None:
    """Refuse data a model cannot train on, before anything is built: one sentence each."""
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}; read files with sivae.read()")
    check_not_empty(adata)
    check_unique_names(adata)
    check_anndata_matrices(adata)
    if backed:
        # finite values and constant features were checked by the passes that scaled it
        if likelihood == "nb":
            raise InputError("likelihood 'nb' needs the counts in memory; use 'gaussian' with "
                             "backed input, or load the data with sivae.read")
    else:
        check_finite(adata.X, "adata.X")
        constant = constant_features(adata.X)
        if constant.any():
            raise InputError(f"{int(constant.sum())} features are constant across cells (e.g. "
                             f"{adata.var_names[constant][0]}); drop them, or run sivae.pp.preprocess, which does")
    check_size(adata.n_obs, n_latent=n_latent, c_red=c_red, holdout_fraction=holdout_fraction)
    if likelihood == "nb":
        if _COUNTS not in adata.layers:
            raise InputError(f"likelihood 'nb' needs raw counts in adata.layers['{_COUNTS}']; run "
                             "sivae.pp.preprocess on the counts first")
        check_counts(adata.layers[_COUNTS], f"adata.layers['{_COUNTS}']")
    if cell_type_key is not None and cell_type_key not in adata.obs:
        raise InputError(f"cell_type_key {cell_type_key!r} is not a column of adata.obs; pass one of "
                         f"{list(adata.obs.columns)[:8]}")


def check_same_features(adata: Any, saved: np.ndarray) -> None:
    """Refuse an AnnData whose features are not exactly a saved model's, in order."""
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    current = np.asarray(adata.var_names, dtype=str)
    if len(saved) != len(current) or not np.array_equal(saved, current):
        missing, extra = len(np.setdiff1d(saved, current)), len(np.setdiff1d(current, saved))
        hint = ("reorder it with adata[:, features]" if missing == extra == 0
                else f"{missing} of the model's features are missing and {extra} are new")
        raise InputError(f"the data's features do not match the model's ({hint}); pass the data the "
                         "model was trained on, or load without data and embed new cells with "
                         "get_cell_embedding")
