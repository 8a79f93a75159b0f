"""The feature-wise encoder's input X'_{:,f}: each feature's column over cells reduced to C_red values.

Paper Methods, "Reducing dimensionality of input for feature-wise encoder-decoder": PCA of X^T
without whitening, or a cell-type-stratified downsample of C_red cells. Both are computed from the
training cells only (the authors' code also used held-out cells, which leaks them into training),
and both read the cells through a row source (``rows(idx)``, as `loaders.CellMatrix` and
`backed.BackedCellMatrix` give), so an atlas on disk never needs a dense cells x features copy.
"""

from __future__ import annotations

import warnings

from typing import Protocol

import numpy as np
import torch

from ..distributed import my_share, reduce_over_ranks

METHODS = ("pca", "downsample")

_CHUNK_VALUES = 2**24  # values per densified chunk of cells in a pass over the data (64 MB)


class RowSource(Protocol):
    n_features: int

    def rows(self, idx: np.ndarray) -> torch.Tensor: ...


def feature_input(
    cells: RowSource,
    rows: np.ndarray,
    *,
    method: str = "pca",
    c_red: int = 100,
    labels: np.ndarray | None = None,
    seed: int = 0,
    n_iter: int = 7,
    max_cells: int | None = None,
) -> np.ndarray:
    """Reduce each feature's column over the cells ``rows`` of ``cells`` to ``c_red`` values.

    ``c_red`` is lowered, with a warning, where it exceeds the training cells (or, for PCA, the
    features); PCA reads at most ``max_cells`` of ``rows`` (a seeded uniform sample): its cost
    grows with the cells it reads, and 50,000 cells pin down the features' covariances.

    Parameters
    ----------
    cells
        Scaled data, cells x features, as a row source (``rows(idx)`` -> dense float32 tensor).
    rows
        The training cells.
    method
        ``"pca"``: scores of the first ``c_red`` principal components of X^T (features as
        samples, cells as dimensions), not whitened. ``"downsample"``: the values in ``c_red``
        cells sampled with the proportions of ``labels`` kept (uniformly when ``labels`` is None).
    c_red
        Width of the result; at most the number of training cells (and of features, for PCA).
    labels
        Cell types of the cells ``rows``, for stratified downsampling.
    seed
        Seed of the random start of the PCA or of the sampling.
    n_iter
        Subspace iterations of the PCA, each one pass over the cells.

    Returns
    -------
    F x c_red float32 matrix, divided by one global standard deviation so that its scale suits a
    neural network while the relative variances of the components are kept.
    """
    if method not in METHODS:
        raise ValueError(f"feature_input method must be one of {METHODS}, got {method!r}")
    rows = np.asarray(rows, dtype=np.int64)
    fitting = min(c_red, len(rows), cells.n_features if method == "pca" else c_red)
    if fitting < c_red:
        warnings.warn(f"c_red lowered from {c_red} to {fitting}: it cannot exceed the training cells "
                      "or features", stacklevel=3)
        c_red = fitting
    if method == "pca" and max_cells is not None and len(rows) > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_cells, replace=False))
        rows, labels = rows[keep], None if labels is None else np.asarray(labels)[keep]
    if method == "pca":
        reduced = pca_of_transpose(cells, rows, c_red, seed=seed, n_iter=n_iter)
    else:
        picked = rows[stratified_sample(len(rows), c_red, labels=labels, seed=seed)]
        reduced = cells.rows(picked).numpy().T  # (F, c_red)
    reduced = np.asarray(reduced, dtype=np.float32)
    std = float(reduced.std())
    return reduced / std if std > 0 else reduced


def pca_of_transpose(
    cells: RowSource, rows: np.ndarray, n_components: int, *, seed: int = 0, n_iter: int = 7,
    oversample: int = 10,
) -> np.ndarray:
    """Scores of the top principal components of X^T, (F, n_components), streaming over cells.

    X^T has the features as samples and the cells as dimensions, so its principal axes live in
    cell space (C values each) and its scores in feature space. With A = X^T centred per cell,
    the scores are U S of A = U S V^T, i.e. the top eigenvectors of the F x F operator A A^T
    scaled by the square roots of its eigenvalues. Randomized subspace iteration finds them
    applying A A^T = sum_c a_c a_c^T a chunk of cells at a time, so memory is O(F x k) plus one
    chunk and never grows with the cells. Written by hand because scikit-learn's PCA and
    randomized SVD need X^T whole in memory, and IncrementalPCA over X^T would need column
    (feature) batches and keep C-long components.
    """
    n_features = cells.n_features
    k = min(n_components + oversample, n_features, len(rows))
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(n_features, k, generator=generator, dtype=torch.float64))[0]
    for _ in range(n_iter):
        basis = torch.linalg.qr(_gram_times(cells, rows, basis))[0]  # (F, k)
    projected = basis.T @ _gram_times(cells, rows, basis)  # (k, k): Q^T A A^T Q
    eigenvalues, eigenvectors = torch.linalg.eigh((projected + projected.T) / 2)
    top = torch.argsort(eigenvalues, descending=True)[:n_components]
    scores = basis @ eigenvectors[:, top] * eigenvalues[top].clamp_min(0).sqrt()  # (F, n)
    # a component's sign is arbitrary: make its largest score positive, as sklearn's svd_flip does
    signs = torch.sign(scores[scores.abs().argmax(0), torch.arange(scores.shape[1])])
    return (scores * torch.where(signs == 0, 1.0, signs)).numpy()


def _gram_times(cells: RowSource, rows: np.ndarray, basis: torch.Tensor) -> torch.Tensor:
    """A A^T basis for A = X[rows]^T centred per cell, one chunk of cells at a time, (F, k).

    A sum over cells: under torchrun each rank takes its share of the chunks and the ranks add
    their parts, so every rank holds the same result having read only its share of the cells."""
    out = torch.zeros_like(basis)
    step = max(1, _CHUNK_VALUES // max(cells.n_features, 1))
    basis32 = basis.float()
    for start in my_share(range(0, len(rows), step)):
        a = cells.rows(rows[start : start + step]).float()  # (chunk, F)
        a -= a.mean(1, keepdim=True)  # centre each cell (dimension of X^T) over the features
        out += (a.T @ (a @ basis32)).double()
    return reduce_over_ranks(out)


def stratified_sample(
    n_cells: int, n: int, *, labels: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """``n`` distinct row indices whose label proportions match ``labels`` (largest remainder).

    Written by hand because scikit-learn's stratified splitters refuse classes with one member,
    which single-cell atlases have (rare cell types).
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_cells, size=n, replace=False))
    codes, inverse = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(codes))
    quota = counts * n / n_cells
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: n - take.sum()]:
        take[i] += 1
    picks = [rng.choice(np.flatnonzero(inverse == k), size=t, replace=False) for k, t in enumerate(take)]
    return np.sort(np.concatenate(picks))
