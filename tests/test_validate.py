"""sivae.data.validate: bad matrices are always refused by the right check, clean ones pass."""

from __future__ import annotations

import re

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

from sivae._errors import InputError
from sivae.data import validate
from sivae.data.validate import (
    check_counts,
    check_finite,
    check_not_empty,
    check_size,
    check_unique_names,
    constant_features,
)

FORMATS = ["dense", "csr", "csc", "coo", "csr_array"]


def _as(X: np.ndarray, fmt: str):
    return {
        "dense": lambda a: a,
        "csr": sp.csr_matrix,
        "csc": sp.csc_matrix,
        "coo": sp.coo_matrix,
        "csr_array": sp.csr_array,
    }[fmt](X)


@st.composite
def count_matrices(draw):
    # small non-negative integer matrices, sparse-ish, as float32 or float64
    n, m = draw(st.integers(1, 12)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.0, size=(n, m)) * (rng.random((n, m)) < 0.5)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return X.astype(dtype)


@st.composite
def positions(draw, X):
    # 1..5 distinct cells of X
    n, m = X.shape
    k = draw(st.integers(1, min(5, n * m)))
    flat = draw(st.lists(st.integers(0, n * m - 1), min_size=k, max_size=k, unique=True))
    return np.unravel_index(np.asarray(flat), (n, m))


class _SmallBlocks:
    # forces the dense path to scan in many small row blocks
    def __init__(self, values: int):
        self.values = values

    def __enter__(self):
        self.saved, validate._BLOCK_VALUES = validate._BLOCK_VALUES, self.values

    def __exit__(self, *exc):
        validate._BLOCK_VALUES = self.saved


@settings(max_examples=60, deadline=None)
@given(count_matrices(), st.sampled_from(FORMATS), st.sampled_from([1, 5, 1 << 22]))
def test_clean_counts_pass(X, fmt, block):
    with _SmallBlocks(block):
        check_finite(_as(X, fmt), "adata.X")
        check_counts(_as(X, fmt), "adata.X")


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    count_matrices(),
    st.sampled_from(FORMATS),
    st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_nan_and_inf_are_refused_with_counts(data, X, fmt, bad):
    where = data.draw(positions(X))
    X[where] = bad
    kind = "NaN" if np.isnan(bad) else "infinite"
    with pytest.raises(InputError, match=rf"^{len(where[0])} {kind} values in adata\.X; remove"):
        check_finite(_as(X, fmt), "adata.X")


@settings(max_examples=60, deadline=None)
@given(st.data(), count_matrices(), st.sampled_from(FORMATS), st.sampled_from([1, 1 << 22]))
def test_negative_values_are_refused(data, X, fmt, block):
    where = data.draw(positions(X))
    X[where] = -data.draw(st.sampled_from([1.0, 0.5, 3.0]))
    check_finite(_as(X, fmt), "adata.X")  # finite, so only the counts check objects
    with _SmallBlocks(block), pytest.raises(InputError, match=rf"^{len(where[0])} negative values"):
        check_counts(_as(X, fmt), "adata.X")


@settings(max_examples=60, deadline=None)
@given(st.data(), count_matrices(), st.sampled_from(FORMATS))
def test_non_integer_values_are_refused(data, X, fmt):
    where = data.draw(positions(X))
    X[where] += data.draw(st.sampled_from([0.5, 0.25, 0.125]))
    with pytest.raises(InputError, match=rf"^{len(where[0])} non-integer values .* pass the raw"):
        check_counts(_as(X, fmt), "adata.X")


def test_counts_hint_replaces_the_fix():
    with pytest.raises(InputError, match="use scale_features"):
        check_counts(np.array([[0.5]]), "adata.X", hint="use scale_features")


def test_integer_dtypes():
    check_finite(np.array([[1, 2]], dtype=np.int64), "adata.X")
    check_counts(np.array([[1, 2]], dtype=np.uint16), "adata.X")
    with pytest.raises(InputError, match="1 negative"):
        check_counts(sp.csr_matrix(np.array([[1, -2]], dtype=np.int32)), "adata.X")


@st.composite
def float_matrices(draw):
    # values from a small set, so that ties and constant columns are common; some columns
    # are planted constant (zero or not)
    n, m = draw(st.integers(1, 10)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.choice([0.0, 0.0, 1.0, -2.5, 3.0], size=(n, m))
    for j in range(m):
        if rng.random() < 0.3:
            X[:, j] = rng.choice([0.0, 1.0, -2.5])
    return X


@settings(max_examples=100, deadline=None)
@given(float_matrices(), st.sampled_from(FORMATS), st.sampled_from([1, 3, 1 << 22]))
def test_constant_features_matches_numpy(X, fmt, block):
    expected = X.min(axis=0) == X.max(axis=0)
    with _SmallBlocks(block):
        got = constant_features(_as(X, fmt))
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)


def test_constant_features_with_duplicate_sparse_entries():
    # coo with two stored values summing to 1 at one position: the column is (1, 0) not (0.5, ...)
    X = sp.coo_matrix(([0.5, 0.5, 2.0], ([0, 0, 0], [0, 0, 1])), shape=(2, 2))
    np.testing.assert_array_equal(constant_features(X), [False, False])
    check_counts(X.tocsr(), "adata.X")  # 0.5 + 0.5 is an integer count


def test_backed_matrices_are_checked_in_blocks(tmp_path):
    dense = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, np.nan], [0.0, 1.0, 4.0]])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = dense
    with h5py.File(tmp_path / "x.h5", "r") as f, _SmallBlocks(3):
        with pytest.raises(InputError, match="1 NaN"):
            check_finite(f["X"], "adata.X")
        np.testing.assert_array_equal(constant_features(f["X"][:, :2]), [True, True])
    ad = AnnData(sp.csr_matrix(np.array([[0.0, 1.5, 2.0], [0.0, 1.5, 3.0]])))
    ad.write_h5ad(tmp_path / "s.h5ad")
    backed = anndata.read_h5ad(tmp_path / "s.h5ad", backed="r")
    with _SmallBlocks(3):
        np.testing.assert_array_equal(constant_features(backed.X), [True, True, False])
        with pytest.raises(InputError, match="2 non-integer"):
            check_counts(backed.X, "adata.X")
    backed.file.close()


def test_not_empty():
    check_not_empty(AnnData(np.zeros((1, 1))))
    with pytest.raises(InputError, match="0 cells"):
        check_not_empty(AnnData(np.zeros((0, 3))))
    with pytest.raises(InputError, match="0 features"):
        check_not_empty(AnnData(np.zeros((3, 0))))


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_unique_names():
    adata = AnnData(
        np.zeros((4, 3)),
        obs=pd.DataFrame(index=["a", "b", "a", "c"]),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
    )
    with pytest.raises(
        InputError, match=r"1 duplicate cell names .*'a'.*obs_names_make_unique\(\)"
    ):
        check_unique_names(adata)
    adata.obs_names_make_unique()
    check_unique_names(adata)
    adata.var_names = ["g1", "g1", "g1"]
    with pytest.raises(InputError, match=r"duplicate feature names .*var_names_make_unique\(\)"):
        check_unique_names(adata)


def test_size_examples():
    check_size(100, n_latent=2, c_red=None, holdout_fraction=0.1)
    with pytest.raises(InputError, match="1 held-out cells; use more cells or a larger holdout"):
        check_size(15, n_latent=2, c_red=None, holdout_fraction=0.1)  # floor(1.5) = 1 < 2
    with pytest.raises(InputError, match=r"at least 100 training cells .*c_red=100"):
        check_size(100, n_latent=2, c_red=100, holdout_fraction=0.1)
    check_size(10, n_latent=2, c_red=None, holdout_fraction=0.0)  # no held-out set wanted
    for bad in ({"n_latent": 0}, {"c_red": 0}, {"holdout_fraction": 1.0}):
        kwargs = {"n_latent": 2, "c_red": None, "holdout_fraction": 0.1, **bad}
        with pytest.raises(InputError, match="must be"):
            check_size(1000, **kwargs)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 64),
    st.one_of(st.none(), st.integers(1, 300)),
    st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9]),
)
def test_size_message_states_the_true_minimum(n_latent, c_red, holdout):
    kwargs = {"n_latent": n_latent, "c_red": c_red, "holdout_fraction": holdout}
    with pytest.raises(InputError) as info:
        check_size(1, **kwargs)
    needed = int(re.search(r"at least (\d+) cells", str(info.value)).group(1))
    check_size(needed, **kwargs)  # enough
    with pytest.raises(InputError):
        check_size(needed - 1, **kwargs)  # one fewer is not
