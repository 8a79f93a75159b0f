"""Scores of a cell embedding of several batches: are the batches mixed, is the biology kept?

Batch mixing (1 = mixed as well as the batch sizes allow):

- `ilisi`: the integration local inverse Simpson's index of Korsunsky et al. (2019, Harmony):
  the effective number of batches among a cell's neighbours, weighted by a Gaussian kernel whose
  width is set per cell to a fixed perplexity; `ilisi_score` is its median rescaled to [0, 1] as
  scIB does, ``(median - 1) / (n_batches - 1)``.
- `batch_entropy`: the entropy of the batches among each cell's k nearest neighbours, over
  ``log(n_batches)`` (Haghverdi et al. 2018).
- `kbet`: the acceptance rate of kBET (Buttner et al. 2019): for each cell, a chi-square test of
  its neighbours' batch counts against the batch shares; with ``labels``, within each label, so a
  cell type found in one batch only does not count as unmixed.

Biology kept:

- `knn_label_accuracy`: k-NN label accuracy by stratified cross-validation over the cells of one
  embedding (the classifier is fitted on 4/5 of the cells and scores the rest);
- `label_silhouette`: scikit-learn's silhouette of the labels, rescaled to [0, 1].

Written here, not taken from scib-metrics: that package brings jax beside torch for a handful of
formulas; benchmarks/integration.py's README entry gives the agreement of these with its
``ilisi_knn`` on the same neighbours. All metrics take a cells x dimensions array and one batch
(and label) per cell, and use exact Euclidean neighbours (scikit-learn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

from ._arrays import _labels, _matrix, _positive_int
from ._errors import InputError
from .evaluation import heldout_knn_accuracy, stratified_folds

__all__ = ["batch_entropy", "ilisi", "ilisi_score", "kbet", "knn_label_accuracy", "label_silhouette"]


def _inputs(embedding: Any, batches: Any, k: int, name: str = "batches") -> tuple[np.ndarray, np.ndarray, int]:
    x = _matrix(embedding, "embedding")
    b = _labels(batches, name, x.shape[0])
    k = _positive_int(k, "k")
    if k >= x.shape[0]:
        raise InputError(f"k={k} needs more than {k} cells, the embedding has {x.shape[0]}; lower k")
    return x, b, k


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # (distances, indices) of each cell's k nearest other cells
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, 1:], idx[:, 1:]


def _kernel_rows(dist: np.ndarray, perplexity: float, tol: float = 1e-5, n_iter: int = 50) -> np.ndarray:
    # Gaussian weights exp(-d * beta) per row, beta found by bisection so that each row's entropy
    # is log(perplexity): the calibration of Harmony's LISI (distances, not squared, as there).
    # Distances are taken from each row's nearest one: the normalised weights and the entropy are
    # unchanged, and a wide beta no longer underflows every weight to 0 (where Harmony's and
    # scib-metrics' code give up on the cell).
    dist = dist - dist[:, :1]
    target = np.log(perplexity)
    beta = np.ones(len(dist))
    low, high = np.full(len(dist), -np.inf), np.full(len(dist), np.inf)
    for _ in range(n_iter):
        w = np.exp(-dist * beta[:, None])
        total = w.sum(axis=1)
        safe = np.maximum(total, 1e-300)
        entropy = np.log(safe) + beta * (dist * w).sum(axis=1) / safe
        diff = entropy - target
        active = np.abs(diff) >= tol  # a row that has converged keeps its beta
        if not active.any():
            break
        up = active & (diff > 0)  # entropy too high: a narrower kernel
        down = active & (diff <= 0)
        low = np.where(up, beta, low)
        high = np.where(down, beta, high)
        beta = np.where(up, np.where(np.isinf(high), beta * 2, (beta + high) / 2),
                        np.where(down, np.where(np.isinf(low), beta / 2, (beta + low) / 2), beta))
    w = np.exp(-dist * beta[:, None])
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)


def ilisi(embedding: Any, batches: Any, *, perplexity: float = 30.0) -> np.ndarray:
    """Each cell's integration LISI: 1 / sum over batches of (kernel weight of that batch)^2.

    Parameters
    ----------
    embedding
        Cells x dimensions.
    batches
        A batch per cell.
    perplexity
        Effective neighbours of the kernel; ``3 * perplexity`` nearest cells are read (Harmony's
        default 30: 90 neighbours).

    Returns
    -------
    numpy.ndarray
        Per cell, between 1 (all weight on one batch) and the number of batches.
    """
    k = int(3 * perplexity)
    x, b, k = _inputs(embedding, batches, k)
    dist, idx = _neighbours(x, k)
    weight = _kernel_rows(dist, perplexity)
    codes = np.unique(b, return_inverse=True)[1]
    share = np.zeros((len(x), codes.max() + 1))
    np.add.at(share, (np.repeat(np.arange(len(x)), k), codes[idx].ravel()), weight.ravel())
    return 1.0 / (share**2).sum(axis=1)


def ilisi_score(embedding: Any, batches: Any, *, perplexity: float = 30.0) -> float:
    """Median `ilisi` rescaled to [0, 1]: ``(median - 1) / (n_batches - 1)`` (scIB's iLISI)."""
    n_batches = len(np.unique(_labels(batches, "batches", len(batches))))
    if n_batches < 2:
        raise InputError("batches has one value; mixing needs at least 2 batches")
    return float((np.median(ilisi(embedding, batches, perplexity=perplexity)) - 1) / (n_batches - 1))


def batch_entropy(embedding: Any, batches: Any, *, k: int = 50) -> float:
    """Mean over cells of the entropy of the batches among its ``k`` nearest neighbours, divided by
    ``log(n_batches)``: 0 when every neighbourhood holds one batch, 1 when all are evenly mixed."""
    x, b, k = _inputs(embedding, batches, k)
    codes = np.unique(b, return_inverse=True)[1]
    n_batches = codes.max() + 1
    if n_batches < 2:
        raise InputError("batches has one value; mixing needs at least 2 batches")
    _, idx = _neighbours(x, k)
    counts = np.zeros((len(x), n_batches))
    np.add.at(counts, (np.repeat(np.arange(len(x)), k), codes[idx].ravel()), 1.0)
    p = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return float(entropy.mean() / np.log(n_batches))


def _kbet_rejections(x: np.ndarray, codes: np.ndarray, k: int, alpha: float) -> np.ndarray:
    # per cell: does a chi-square test reject "its neighbours' batches follow the batch shares"?
    present = np.unique(codes)
    if len(present) < 2:
        return np.zeros(len(x), dtype=bool)  # one batch only: nothing to mix here
    local = np.searchsorted(present, codes)
    expected = np.bincount(local) / len(local) * k
    _, idx = _neighbours(x, k)
    observed = np.zeros((len(x), len(present)))
    np.add.at(observed, (np.repeat(np.arange(len(x)), k), local[idx].ravel()), 1.0)
    statistic = ((observed - expected) ** 2 / expected).sum(axis=1)
    return chi2.sf(statistic, df=len(present) - 1) < alpha


def kbet(embedding: Any, batches: Any, labels: Any | None = None, *, k: int = 25, alpha: float = 0.05) -> float:
    """kBET's acceptance rate: the share of cells whose ``k`` nearest neighbours' batch counts a
    chi-square test at level ``alpha`` does not tell apart from the batch shares (1: mixed).

    With ``labels`` the test runs within each label (its neighbours and its batch shares), on the
    labels with more than ``k`` cells; the rate is over the cells tested.
    """
    x, b, k = _inputs(embedding, batches, k)
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    codes = np.unique(b, return_inverse=True)[1]
    if codes.max() < 1:
        raise InputError("batches has one value; mixing needs at least 2 batches")
    groups = np.zeros(len(x), dtype=int) if labels is None else np.unique(
        _labels(labels, "labels", len(x)), return_inverse=True)[1]
    rejected, tested = 0, 0
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        if len(rows) <= k:
            continue
        rejected += int(_kbet_rejections(x[rows], codes[rows], k, alpha).sum())
        tested += len(rows)
    if tested == 0:
        raise InputError(f"no label has more than k={k} cells; lower k")
    return 1.0 - rejected / tested


def knn_label_accuracy(embedding: Any, labels: Any, *, k: int = 15, n_folds: int = 5, seed: int = 0) -> float:
    """Mean over ``n_folds`` stratified folds of the accuracy of a ``k``-NN classifier fitted on the
    other folds' cells (`sivae.evaluation.heldout_knn_accuracy`): how well the embedding keeps
    the labels apart. The embedding itself was computed on all cells."""
    x = _matrix(embedding, "embedding")
    y = _labels(labels, "labels", x.shape[0])
    scores = [heldout_knn_accuracy(x[tr], y[tr], x[te], y[te], k=k)
              for tr, te in stratified_folds(y, n_folds=n_folds, seed=seed)]
    return float(np.mean(scores))


def label_silhouette(embedding: Any, labels: Any, *, max_cells: int = 5000, seed: int = 0) -> float:
    """scikit-learn's silhouette of the labels, ``(s + 1) / 2`` in [0, 1] (scIB's label ASW), on a
    seeded sample of ``max_cells`` cells when there are more (its cost grows with cells squared)."""
    x = _matrix(embedding, "embedding")
    y = _labels(labels, "labels", x.shape[0])
    if len(np.unique(y)) < 2:
        raise InputError("labels has one value; a silhouette needs at least 2 labels")
    sample = None if x.shape[0] <= max_cells else _positive_int(max_cells, "max_cells", minimum=2)
    return float((silhouette_score(x, y, sample_size=sample, random_state=seed) + 1) / 2)
