"""What scipy trusts and sivae checks first: a sparse matrix's arrays agree with each other and with
its shape, and its values are real numbers.

scipy reads ``indptr`` and ``indices`` without bounds checks: a row pointer past the stored values
or a column index past the last column makes it read and write outside its arrays (heap
corruption, a crash, or a huge allocation). `sivae.data.validate.check_matrix` runs these checks
on every path that reads a matrix; the file readers run them on a file's arrays before anndata
or scanpy builds a matrix from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import InputError

__all__ = ["check_compressed", "check_dtype", "check_structure", "scipy_index_dtypes"]

# Column indices checked per step, bounding temporary memory in memory and on disk alike.
_INDEX_STEP = 1 << 22
_SCIPY_INDEX = (np.dtype(np.int32), np.dtype(np.int64))
# dtype kind -> how a message names values that are not real numbers
_NOT_NUMBERS = {"c": "complex numbers", "U": "text", "S": "bytes (text)", "O": "text or other Python objects",
                "M": "dates", "m": "time spans", "V": "records"}


def check_dtype(dtype: Any, where: str) -> None:
    """Refuse values that are not real numbers (bool, integer or float): text, complex, objects."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        return
    what = _NOT_NUMBERS.get(dtype.kind, f"values of type {dtype}")
    raise InputError(f"{where} holds {what}, not real numbers (dtype {dtype}); store the counts or "
                     "measurements in it as integers or floats (e.g. float32)")


def check_compressed(indptr: Any, indices: Any, n_values: int, shape: tuple[int, int], fmt: str,
                     where: str, *, scan_indices: bool = True) -> None:
    """Refuse a CSR or CSC matrix whose arrays disagree, before scipy or anndata uses them.

    scipy trusts ``indptr`` and ``indices``: a pointer past the stored values or an index past the
    last column makes it read and write outside its arrays (heap corruption, a crash, or a huge
    allocation). ``indptr`` and ``indices`` are numpy arrays or h5py datasets (read in steps).

    Parameters
    ----------
    indptr, indices
        The matrix's pointers (one per row for CSR, per column for CSC, plus one) and indices.
    n_values
        How many values the matrix stores (length of its ``data``).
    shape
        (rows, columns).
    fmt
        ``"csr"`` or ``"csc"``.
    where
        How to name the matrix in the message, e.g. ``"adata.X"``.
    scan_indices
        Check every index too; a backed matrix leaves them to each batch as it is read, so that
        opening a file costs O(rows), not a pass over the file.

    Raises
    ------
    InputError
        If the index dtypes are not integers, ``indptr`` does not have one entry per row (column)
        plus one, does not start at 0, decreases, or does not end at the number of stored values,
        or an index lies outside ``[0, n_columns)`` (``[0, n_rows)`` for CSC).
    """
    problem = _compressed_problem(indptr, indices, n_values, shape, fmt, scan_indices,
                                  in_memory=isinstance(indices, np.ndarray))
    if problem:
        raise InputError(f"{where} is a corrupt {fmt.upper()} sparse matrix: {problem}, which would crash or "
                         "corrupt memory if read; rebuild the matrix, or if it came from a file, write it "
                         "again from its source")


def _compressed_problem(indptr: Any, indices: Any, n_values: int, shape: tuple[int, int], fmt: str,
                        scan_indices: bool, *, in_memory: bool) -> str | None:
    major, minor = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
    line, other = ("row", "column") if fmt == "csr" else ("column", "row")
    for name, array in (("indptr", indptr), ("indices", indices)):
        if np.dtype(array.dtype).kind not in "iu" or len(array.shape) != 1:
            return f"its {name} is {np.dtype(array.dtype)} of shape {tuple(array.shape)}, not a vector of integers"
        if in_memory and np.dtype(array.dtype) not in _SCIPY_INDEX:  # scipy's routines take no other
            return f"its {name} is {np.dtype(array.dtype)}, where scipy takes int32 or int64"
    if min(shape) < 0:
        return f"its shape {tuple(shape)} is negative"
    if indptr.shape[0] != major + 1:  # before reading it: a file's claimed shape may be absurd
        return f"{indptr.shape[0]} {line} pointers for {major} {line}s, where {major + 1} belong"
    pointers = np.asarray(indptr[:]).astype(np.int64)  # (major + 1,), 8 bytes per row
    n_indices = int(indices.shape[0])
    steps = np.diff(pointers)
    if pointers[0] != 0:
        return f"its {line} pointers start at {int(pointers[0])}, not 0"
    past = np.flatnonzero(pointers > n_indices)
    if len(past):
        return f"its {line} pointer {int(past[0])} is {int(pointers[past[0]])}, past its {n_indices} stored values"
    if (steps < 0).any():
        at = int(np.flatnonzero(steps < 0)[0])
        return f"its {line} pointer {at + 1} is below pointer {at}"
    if pointers[-1] != n_indices or n_indices != n_values:
        return (f"its {line} pointers end at {int(pointers[-1])}, but it stores {n_indices} {other} "
                f"indices and {n_values} values")
    for start in range(0, n_indices if scan_indices else 0, _INDEX_STEP):
        step = np.asarray(indices[start : start + _INDEX_STEP])
        lo, hi = int(step.min()), int(step.max())
        if lo < 0 or hi >= minor:
            return f"{other} index {lo if lo < 0 else hi} lies outside its {minor} {other}s"
    return None


def check_structure(X: Any, where: str) -> None:
    """`check_compressed` (or its COO counterpart) on a scipy sparse matrix or an anndata backed
    sparse dataset; anything else passes."""
    if sp.issparse(X):
        _check_scipy_structure(X, where)
    elif hasattr(X, "group") and getattr(X, "format", None) in ("csr", "csc"):  # anndata backed sparse
        g = X.group
        check_compressed(g["indptr"], g["indices"], g["data"].shape[0], tuple(X.shape), X.format, where)


def _check_scipy_structure(X: Any, where: str) -> None:
    if X.format in ("csr", "csc"):
        check_compressed(X.indptr, X.indices, X.data.shape[0], X.shape, X.format, where)
    elif X.format == "bsr":
        r, c = X.blocksize
        check_compressed(X.indptr, X.indices, X.data.shape[0], (X.shape[0] // r, X.shape[1] // c), "csr", where)
    elif X.format == "coo":
        coords = getattr(X, "coords", (X.row, X.col))
        for axis, (index, n) in enumerate(zip(coords, X.shape)):
            if len(index) != X.data.shape[0] or (len(index) and (index.min() < 0 or index.max() >= n)):
                raise InputError(f"{where} is a corrupt COO sparse matrix (its {('row', 'column')[axis]} "
                                 "indices disagree with its shape or values); rebuild the matrix")


def scipy_index_dtypes(X: Any) -> None:
    """Give a CSR, CSC or BSR matrix read from a file the index dtype scipy takes, in place.

    A file may store its indices as int16 or uint64 and anndata keeps them so; every scipy
    routine then fails. Values are checked afterwards (a uint64 beyond int64 turns negative and
    is refused), so the cast cannot hide a corrupt index.
    """
    if not sp.issparse(X) or X.format not in ("csr", "csc", "bsr"):
        return
    if X.indices.dtype in _SCIPY_INDEX and X.indptr.dtype == X.indices.dtype:
        return
    X.indices = np.asarray(X.indices).astype(np.int64)
    X.indptr = np.asarray(X.indptr).astype(np.int64)
