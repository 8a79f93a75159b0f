"""The feature-wise encoder's input X'_{:,f}: each feature's column over cells reduced to C_red values.

Paper Methods, "Reducing dimensionality of input for feature-wise encoder-decoder": PCA of X^T
without whitening, or a cell-type-stratified downsample of C_red cells. Both are computed from the
training cells only (the authors' code also used held-out cells, which leaks them into training).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA

METHODS = ("pca", "downsample")


def feature_input(
    X: Any,
    *,
    method: str = "pca",
    c_red: int = 100,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Reduce each feature's column of ``X`` (training cells x F) to ``c_red`` values.

    Parameters
    ----------
    X
        Scaled training data, cells x features, dense or sparse.
    method
        ``"pca"``: scores of the first ``c_red`` principal components of X^T (F samples, cells as
        dimensions), not whitened. ``"downsample"``: the values in ``c_red`` cells sampled with the
        proportions of ``labels`` kept (uniformly when ``labels`` is None).
    c_red
        Width of the result; at most the number of training cells (and of features, for PCA).
    labels
        Cell types of the training cells, for stratified downsampling.
    seed
        Seed of the randomized SVD or of the sampling.

    Returns
    -------
    F x c_red float32 matrix, divided by one global standard deviation so that its scale suits a
    neural network while the relative variances of the components are kept.
    """
    if method not in METHODS:
        raise ValueError(f"feature_input method must be one of {METHODS}, got {method!r}")
    n_cells, n_features = X.shape
    if method == "pca":
        dense_t = (X.toarray() if sp.issparse(X) else np.asarray(X)).T.astype(np.float32)
        pca = PCA(n_components=c_red, svd_solver="auto", random_state=seed)
        reduced = pca.fit_transform(dense_t)
    else:
        rows = stratified_sample(n_cells, c_red, labels=labels, seed=seed)
        sub = X[rows]
        reduced = (sub.toarray() if sp.issparse(sub) else np.asarray(sub)).T
    reduced = np.asarray(reduced, dtype=np.float32)
    std = float(reduced.std())
    return reduced / std if std > 0 else reduced


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
