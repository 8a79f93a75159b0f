"""Preprocessing applied a minibatch at a time: stored sparse rows in, the values a model trains on out.

Backed training keeps the file's raw sparse counts on disk and turns each batch of rows into
model input as it is read: library-size normalisation and log1p on the stored values (still
sparse), the kept features, then the z-score from stored means and standard deviations (the step
that densifies). The statistics come from a pass over the file (`sivae.data.streaming`), so a
batch gets the values `sivae.pp.preprocess` would have given the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._errors import InputError

__all__ = ["RowTransform"]


@dataclass(frozen=True, eq=False)
class RowTransform:
    """The steps from stored rows to model input, each optional, in the order listed.

    Parameters
    ----------
    library_size
        (C,) total counts of every stored row: rows are scaled to ``target_sum`` total, as
        `scanpy.pp.normalize_total` does (rows with no counts stay zero).
    target_sum
        Total counts per cell after normalisation.
    log1p
        Take log(1 + x) of the (normalised) values.
    columns
        Stored columns to keep, in this order (F,).
    mean, std
        (F,) each: z-score the kept columns, ``(x - mean) / std``.
    max_value
        With ``mean``/``std``: clip z-scores to ``[-max_value, max_value]``.
    """

    library_size: np.ndarray | None = None
    target_sum: float = 1e4
    log1p: bool = False
    columns: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise InputError("scaling needs both mean and std; pass both or neither")
        if self.max_value is not None and self.mean is None:
            raise InputError("max_value clips z-scores, so it needs mean and std")
        if self.max_value is not None and not self.max_value > 0:
            raise InputError(f"max_value must be a positive number or None, got {self.max_value!r}")
        if not self.target_sum > 0:
            raise InputError(f"target_sum must be a positive number, got {self.target_sum!r}")
        if self.mean is not None:
            mean, std = (np.asarray(a, dtype=np.float32).reshape(-1) for a in (self.mean, self.std))
            if mean.shape != std.shape:
                raise InputError(f"scale mean has {mean.size} values but std has {std.size}; "
                                 "pass one of each per feature")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise InputError("scale (mean, std) must be finite with every std > 0; drop "
                                 "constant features before scaling")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
        if self.columns is not None:
            object.__setattr__(self, "columns", np.asarray(self.columns, dtype=np.int64))
        if self.library_size is not None:
            object.__setattr__(self, "library_size", np.asarray(self.library_size, dtype=np.float64))

    def n_features(self, n_stored: int) -> int:
        """Width of the output for ``n_stored`` stored columns."""
        return n_stored if self.columns is None else len(self.columns)

    def check(self, n_rows: int, n_stored: int) -> None:
        """Refuse a transform that does not fit a stored matrix of ``n_rows`` x ``n_stored``."""
        if self.library_size is not None and self.library_size.shape != (n_rows,):
            raise InputError(f"library_size has {self.library_size.size} values but the matrix has "
                             f"{n_rows} cells; pass one per cell")
        if self.columns is not None and len(self.columns) and (
            self.columns.min() < 0 or self.columns.max() >= n_stored
        ):
            raise InputError(f"columns must index the matrix's {n_stored} features")
        width = self.n_features(n_stored)
        if self.mean is not None and self.mean.size != width:
            raise InputError(f"scale mean has {self.mean.size} values but the matrix has {width} "
                             "features; pass one per feature")

    def sparse_steps(self, block: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        """Normalise, log1p and select columns of the stored rows ``rows`` given as ``block``,
        keeping it sparse (``block`` is modified in place)."""
        if self.library_size is not None:
            totals = self.library_size[rows]
            factor = (self.target_sum / np.where(totals > 0, totals, 1.0)).astype(np.float32)
            block.data *= np.repeat(factor, np.diff(block.indptr))
        if self.log1p:
            np.log1p(block.data, out=block.data)
        return block if self.columns is None else block[:, self.columns]

    def apply(self, block: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """Model input for the stored rows ``rows`` given as ``block``, dense float32 (R, F).

        ``block`` is modified in place.
        """
        out = self.sparse_steps(block, rows).toarray()
        if self.mean is not None:
            out -= self.mean
            out /= self.std
            if self.max_value is not None:
                np.clip(out, -self.max_value, self.max_value, out=out)
        return out
