"""RowTransform: per-batch preprocessing gives what scanpy gives the whole matrix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sivae._errors import InputError
from sivae.data.loaders import CellMatrix
from sivae.data.transform import RowTransform


def _counts(n_cells: int = 60, n_features: int = 25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(0.5, 2.0, n_features), (n_cells, n_features)).astype(np.float32)
    X[3] = 0  # a cell with no counts stays zero
    return sp.csr_matrix(X)


@pytest.mark.filterwarnings("ignore:Some cells have zero counts")
def test_matches_scanpy_normalise_log_subset_and_scale():
    counts = _counts()
    columns = np.array([7, 2, 11, 4, 20])
    reference = ad.AnnData(counts.copy())
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    logged = reference.X.toarray()[:, columns]
    mean, std = logged.mean(0), logged.std(0, ddof=1)
    expected = np.clip((logged - mean) / std, -1.5, 1.5)
    transform = RowTransform(library_size=np.asarray(counts.sum(1)).ravel(), log1p=True,
                             columns=columns, mean=mean, std=std, max_value=1.5)
    cells = CellMatrix(counts, transform=transform)
    assert cells.shape == (60, 5)
    idx = np.array([3, 0, 59, 0, 31])
    np.testing.assert_allclose(cells.rows(idx).numpy(), expected[idx], rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    n_cells=st.integers(1, 12), n_features=st.integers(1, 9), density=st.floats(0.0, 1.0),
    log1p=st.booleans(), normalise=st.booleans(), scale=st.booleans(), seed=st.integers(0, 99),
)
def test_any_sparse_batch_equals_the_dense_computation(n_cells, n_features, density, log1p,
                                                       normalise, scale, seed):
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_features, density=density, format="csr", dtype=np.float32, rng=rng)
    X.data = np.rint(X.data * 20).astype(np.float32)
    dense = X.toarray()
    columns = rng.permutation(n_features)[: rng.integers(1, n_features + 1)]
    totals = dense.sum(1)
    mean = rng.normal(size=len(columns)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, len(columns)).astype(np.float32)
    transform = RowTransform(library_size=totals if normalise else None, target_sum=100.0,
                             log1p=log1p, columns=columns, mean=mean if scale else None,
                             std=std if scale else None)
    expected = dense.copy()
    if normalise:
        expected *= (100.0 / np.where(totals > 0, totals, 1.0))[:, None]
    if log1p:
        expected = np.log1p(expected)
    expected = expected[:, columns]
    if scale:
        expected = (expected - mean) / std
    idx = rng.integers(0, n_cells, size=5)
    got = CellMatrix(X, transform=transform).rows(idx).numpy()
    np.testing.assert_allclose(got, expected[idx], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mean": np.zeros(3)}, "both mean and std"),
    ({"max_value": 2.0}, "needs mean and std"),
    ({"mean": np.zeros(2), "std": np.ones(2), "max_value": -1.0}, "positive number"),
    ({"mean": np.zeros(2), "std": np.array([1.0, 0.0])}, "every std > 0"),
    ({"mean": np.zeros(2), "std": np.ones(3)}, "std has 3"),
    ({"target_sum": 0.0}, "target_sum must be a positive"),
])
def test_refuses_impossible_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        RowTransform(**kwargs)


def test_refuses_a_dense_matrix():
    with pytest.raises(ValueError, match="sparse matrices only"):
        CellMatrix(np.ones((3, 2)), transform=RowTransform(log1p=True))
