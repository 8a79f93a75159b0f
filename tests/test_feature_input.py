"""The feature-wise input: streamed PCA of X^T against an exact SVD, and stratified downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from sivae.data import feature_input as fi
from sivae.data.loaders import CellMatrix


def _low_rank(n_cells: int = 300, n_features: int = 200, rank: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_cells, rank)) @ rng.normal(size=(rank, n_features)) * 2.0
    return (signal + rng.normal(size=(n_cells, n_features))).astype(np.float32)


def _exact_scores(X: np.ndarray, n: int) -> np.ndarray:
    A = X.T - X.T.mean(0)  # features as samples, centred per cell
    U, S, _ = np.linalg.svd(A.astype(np.float64), full_matrices=False)
    return U[:, :n] * S[:n]


def test_streamed_pca_finds_the_exact_components():
    X = _low_rank()
    rows = np.arange(0, 300, 2)  # training cells only
    scores = fi.pca_of_transpose(CellMatrix(X), rows, 20, seed=1)
    exact = _exact_scores(X[rows], 20)
    assert scores.shape == (200, 20)
    # the planted components exactly (up to sign), the noise components' variance nearly
    for j in range(5):
        assert abs(np.corrcoef(scores[:, j], exact[:, j])[0, 1]) > 0.9999
    assert (scores**2).sum() / (exact**2).sum() > 0.99
    # sign convention: each component's largest score is positive
    assert np.all(scores[np.abs(scores).argmax(0), np.arange(20)] > 0)


def test_chunk_size_does_not_change_the_result(monkeypatch):
    X = _low_rank(n_cells=120, n_features=50)
    rows = np.arange(120)
    whole = fi.pca_of_transpose(CellMatrix(X), rows, 8)
    monkeypatch.setattr(fi, "_CHUNK_VALUES", 7 * 50)  # seven cells per chunk
    np.testing.assert_allclose(fi.pca_of_transpose(CellMatrix(X), rows, 8), whole, rtol=1e-4, atol=1e-3)


def test_downsample_keeps_cell_type_proportions_and_reads_those_cells():
    X = _low_rank(n_cells=100, n_features=30)
    labels = np.array(["a"] * 70 + ["b"] * 25 + ["c"] * 5)
    picked = fi.stratified_sample(100, 20, labels=labels, seed=0)
    assert len(set(picked)) == 20
    assert [int((labels[picked] == t).sum()) for t in "abc"] == [14, 5, 1]
    reduced = fi.feature_input(CellMatrix(X), np.arange(100), method="downsample", c_red=20,
                               labels=labels, seed=0)
    expected = X[picked].T
    np.testing.assert_allclose(reduced, expected / expected.std(), rtol=1e-5)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        fi.feature_input(CellMatrix(np.ones((3, 2))), np.arange(3), method="ica")
