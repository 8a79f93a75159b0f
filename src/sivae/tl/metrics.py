"""Scores of embeddings and loadings: k-NN accuracy, loading silhouette, isolated norm, hub recall.

Each takes plain arrays (a column of ``adata.obs``/``adata.var`` or an ``obsm``/``varm`` matrix) so
it works on any method's output, and refuses malformed input with one sentence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from sivae import _params
from sivae._arrays import _labels, _mask, _matrix, _positive_int
from sivae._errors import InputError


def knn_accuracy(
    embedding: Any, labels: Any, *, k: int = 15, n_folds: int = 5, seed: int = 0
) -> float:
    """Stratified k-fold cross-validated accuracy of a k-nearest-neighbour classifier.

    The paper's measure of how well a cell embedding separates known cell types.

    Parameters
    ----------
    embedding
        Cells x dimensions matrix, e.g. ``adata.obsm["X_sivae"]``.
    labels
        One label per cell, e.g. ``adata.obs["cell_type"]``.
    k
        Neighbours per prediction (scikit-learn ``KNeighborsClassifier(n_neighbors=k)``).
    n_folds
        Folds of ``StratifiedKFold``; every label needs at least this many cells.
    seed
        Seed of the fold shuffle.

    Returns
    -------
    float
        Mean held-out accuracy over the folds, in [0, 1].
    """
    x = _matrix(embedding, "embedding")
    y = _labels(labels, "labels", x.shape[0])
    k = _positive_int(k, "k")
    n_folds = _positive_int(n_folds, "n_folds", minimum=2)
    seed = _params.seed(seed)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"labels must have at least 2 distinct values; got {len(classes)}")
    if counts.min() < n_folds:
        small = classes[counts.argmin()]
        raise InputError(
            f"label {small!r} has {counts.min()} cells, fewer than n_folds={n_folds}; "
            "drop it or lower n_folds"
        )
    n_train = x.shape[0] - int(np.ceil(x.shape[0] / n_folds))
    if k > n_train:
        raise InputError(f"k={k} exceeds the {n_train} training cells per fold; lower k")
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=folds)
    return float(np.mean(scores))


def loading_silhouette(loadings: Any, labels: Any) -> float:
    """Silhouette score of feature groups (e.g. gene communities) in the loading space.

    Parameters
    ----------
    loadings
        Features x dimensions matrix, e.g. ``adata.varm["sivae_loadings"]``.
    labels
        One group per feature, e.g. ``adata.var["community"]``.

    Returns
    -------
    float
        Mean silhouette (Euclidean) in [-1, 1]; near 1 when groups are tight and far apart.
    """
    x = _matrix(loadings, "loadings")
    y = _labels(labels, "labels", x.shape[0])
    n_groups = len(np.unique(y))
    if not 2 <= n_groups <= x.shape[0] - 1:
        raise InputError(
            f"labels must have between 2 and {x.shape[0] - 1} distinct values "
            f"(one fewer than the features); got {n_groups}"
        )
    return float(silhouette_score(x, y))


def isolated_norm_ratio(loadings: Any, is_isolated: Any) -> float:
    """Mean L2 norm of the isolated features' loadings over that of all other features.

    Isolated genes co-vary with nothing, so an interpretable model puts them near the origin:
    a ratio well below 1 is what the interpretability term should produce.

    Parameters
    ----------
    loadings
        Features x dimensions matrix, e.g. ``adata.varm["sivae_loadings"]``.
    is_isolated
        Boolean per feature, e.g. ``adata.var["is_isolated"]``.

    Returns
    -------
    float
        ``mean(||v_f||, isolated) / mean(||v_f||, the rest)``.
    """
    x = _matrix(loadings, "loadings")
    mask = _mask(is_isolated, "is_isolated", x.shape[0])
    if mask.all() or not mask.any():
        raise InputError("is_isolated must mark some but not all features as isolated")
    norms = np.linalg.norm(x, axis=1)
    rest = norms[~mask].mean()
    if rest == 0:
        raise InputError("the non-isolated features all have zero loadings; the ratio is undefined")
    return float(norms[mask].mean() / rest)


def hubs_in_top(centrality: Any, is_hub: Any, *, top: int = 10) -> int:
    """How many true hubs are among the ``top`` features ranked by centrality.

    Parameters
    ----------
    centrality
        One score per feature, higher is more central, e.g. ``adata.var["sivae_centrality"]``.
    is_hub
        Boolean per feature, e.g. ``adata.var["is_hub"]``.
    top
        How many of the highest-scoring features to look at (at most the number of features).

    Returns
    -------
    int
        Number of hubs among the ``top`` highest-scoring features (ties broken by feature order).
    """
    scores = np.asarray(centrality, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise InputError(f"centrality must be a non-empty 1-D array; got shape {scores.shape}")
    n_bad = int((~np.isfinite(scores)).sum())
    if n_bad:
        raise InputError(f"centrality has {n_bad} NaN or infinite values; remove them first")
    mask = _mask(is_hub, "is_hub", scores.size)
    top = _positive_int(top, "top")
    if top > scores.size:
        raise InputError(f"top={top} exceeds the {scores.size} features")
    order = np.argsort(-scores, kind="stable")[:top]
    return int(mask[order].sum())
