"""Minibatches of cells x features, densified one block at a time.

The trainer asks a source for rows by index and a sampler for (cell batch, feature batch) pairs,
so sparse, on-disk and multi-process inputs change these two pieces and nothing above them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from .._errors import InputError
from . import validate
from .backed import BackedCellMatrix, is_backed, training_matrix
from .transform import RowTransform


class CellMatrix:
    """Rows of an in-memory cells x features matrix (dense or sparse), as float32 tensors.

    A dense matrix is held once as a torch tensor and indexed without copies; a sparse one stays
    sparse and only the requested rows are densified, after the optional ``transform`` (sparse
    matrices only), as `backed.BackedCellMatrix` does for a matrix on disk.
    """

    def __init__(self, X: Any, *, transform: RowTransform | None = None) -> None:
        if sp.issparse(X):
            self._sparse = sp.csr_matrix(X, dtype=np.float32)
            self._dense = None
        else:
            if transform is not None:
                raise ValueError("a RowTransform applies to sparse matrices only")
            self._sparse = None
            self._dense = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        if transform is not None:
            transform.check(*X.shape)
        self.transform = transform
        n_features = X.shape[1] if transform is None else transform.n_features(X.shape[1])
        self.shape = (X.shape[0], n_features)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        """Dense float32 rows ``idx``, (len(idx), F)."""
        if self._dense is not None:
            return self._dense[torch.from_numpy(np.asarray(idx, dtype=np.int64))]
        if self.transform is None:
            return torch.from_numpy(self._sparse[idx].toarray())
        return torch.from_numpy(self.transform.apply(self._sparse[idx], np.asarray(idx)))

    def nonzero(self, idx: np.ndarray) -> torch.Tensor:
        """Row (position in ``idx``) and column of every nonzero of ``rows(idx)``, once, (2, nnz) int64.

        From a sparse matrix's own structure (stored zeros included), which costs a fraction of
        finding them in the dense rows: the NB likelihood's lgamma terms run there alone.
        """
        if self._sparse is None or self.transform is not None:
            return torch.nonzero(self.rows(idx)).T
        block = self._sparse[idx]
        block.sum_duplicates()  # a copy: entries stored twice are one entry of rows(idx)
        rows = np.repeat(np.arange(block.shape[0], dtype=np.int64), np.diff(block.indptr))
        return torch.from_numpy(np.stack([rows, block.indices.astype(np.int64)]))

    def row_sums(self) -> np.ndarray:
        """Per-cell totals of the stored values, before any transform (library sizes), (C,)."""
        if self._dense is not None:
            return self._dense.sum(1).numpy()
        return np.asarray(self._sparse.sum(1)).ravel()


class BlockSampler:
    """Shuffled (cell batch, feature batch) index pairs for one epoch at a time.

    Cells are shuffled once per epoch and cut into batches; each step pairs its cells with the next
    slice of a shuffled feature order, so every feature is scored equally often. With
    ``world_size > 1`` each rank takes every world_size-th batch, as a DistributedSampler would.
    The generator's state is saved in checkpoints, so a resumed run continues the same sequence.
    """

    def __init__(
        self,
        cells: np.ndarray,
        n_features: int,
        *,
        batch_size: int,
        feature_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cells = np.asarray(cells, dtype=np.int64)
        self.n_features = n_features
        self.batch_size = batch_size
        self.feature_batch_size = min(feature_batch_size, n_features)
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)

    @property
    def all_features(self) -> bool:
        return self.feature_batch_size >= self.n_features

    def _n_batches(self) -> int:
        n = -(-len(self.cells) // self.batch_size)
        if n > 1 and len(self.cells) % self.batch_size == 1:
            n -= 1  # the dropped one-cell batch, see cell_batches
        return n

    def steps_per_epoch(self) -> int:
        """Steps this rank takes per epoch; the same on every rank."""
        return -(-self._n_batches() // self.world_size)

    def cell_batches(self) -> list[np.ndarray]:
        """All ranks' cell batches of one epoch, in order."""
        order = self.cells[self.rng.permutation(len(self.cells))]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:
            # a batch of one cell gives a degenerate gradient estimate; its cell waits an epoch
            batches.pop()
        return batches

    def feature_batches(self, n_steps: int) -> list[np.ndarray]:
        if self.all_features:
            everything = np.arange(self.n_features)
            return [everything] * n_steps
        out: list[np.ndarray] = []
        while len(out) < n_steps:
            order = self.rng.permutation(self.n_features)
            out.extend(
                np.sort(order[i : i + self.feature_batch_size])
                for i in range(0, self.n_features - self.feature_batch_size + 1, self.feature_batch_size)
            )
        return out[:n_steps]

    def epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's (cell batch, feature batch) pairs for one epoch.

        Every rank draws the same global sequence from the same generator and keeps its share,
        so the ranks' generators never drift apart; the sequence is padded by wrapping around,
        as DistributedSampler pads, so all ranks take the same number of steps.
        """
        cells = self.cell_batches()
        pairs = list(zip(cells, self.feature_batches(len(cells))))
        padded = self.steps_per_epoch() * self.world_size
        pairs += pairs[: padded - len(pairs)]
        yield from pairs[self.rank :: self.world_size]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def cells_on_features(adata: AnnData, feature_names: np.ndarray) -> CellMatrix | BackedCellMatrix:
    """Rows of ``adata`` restricted and ordered to ``feature_names`` (a model's features), in the
    space the model reads: new cells to embed or score."""
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    if is_backed(adata):
        if not np.array_equal(np.asarray(adata.var_names, dtype=str), feature_names):
            raise InputError("a backed AnnData must hold exactly the model's features, in order; "
                             "subset it with adata[:, features] before sivae.pp.preprocess")
        return training_matrix(adata)
    missing = np.setdiff1d(feature_names, np.asarray(adata.var_names, dtype=str))
    if len(missing):
        raise InputError(
            f"{len(missing)} of the model's {len(feature_names)} features are missing from the data "
            f"(e.g. {', '.join(missing[:3])}); embed data measured on the same features"
        )
    validate.check_unique_names(adata)
    validate.check_anndata_matrices(adata)  # before the subset below, which touches every matrix
    X = adata[:, feature_names].X
    validate.check_finite(X, "adata.X")
    return CellMatrix(X)
