"""sivae.tl.agreement and its figures: |Spearman| per dimension, heatmap, loadings as images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import agreement, agreement_matrix


def _adata(n_features: int = 784, k: int = 2, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    adata = AnnData(rng.normal(size=(5, n_features)).astype(np.float32))
    adata.var_names = [f"pixel_{i}" for i in range(n_features)]
    adata.varm[KEYS.LOADINGS] = rng.normal(size=(n_features, k))
    return adata


def test_agreement_is_the_absolute_spearman_per_dimension_and_its_median():
    adata = _adata(200, 3)
    V = adata.varm[KEYS.LOADINGS]
    same_ranks = np.exp(V) * np.array([1.0, -1.0, 1.0])  # monotone per column, one sign flipped
    rng = np.random.default_rng(1)
    table = agreement(adata, {"siVAE": KEYS.LOADINGS, "monotone": same_ranks,
                              "noise": rng.normal(size=(200, 3))})
    assert list(table[["a", "b"]].itertuples(index=False, name=None)) == [
        ("siVAE", "monotone"), ("siVAE", "noise"), ("monotone", "noise")]
    np.testing.assert_allclose(table.loc[0, ["dim 1", "dim 2", "dim 3", "median"]].astype(float), 1.0)
    assert table.loc[1, "median"] < 0.2
    assert adata.uns[KEYS.AGREEMENT] is table
    matrix = agreement_matrix(table)
    assert matrix.loc["noise", "siVAE"] == matrix.loc["siVAE", "noise"] == table.loc[1, "median"]
    assert np.all(np.diag(matrix) == 1.0)


def test_agreement_refuses_mismatched_interpretations():
    adata = _adata(50, 2)
    with pytest.raises(InputError, match="at least two"):
        agreement(adata, {"siVAE": KEYS.LOADINGS})
    with pytest.raises(InputError, match="must be 50 features x K"):
        agreement(adata, {"siVAE": KEYS.LOADINGS, "other": np.ones((49, 2))})
    with pytest.raises(InputError, match="different numbers of dimensions"):
        agreement(adata, {"siVAE": KEYS.LOADINGS, "other": np.ones((50, 3))})
    with pytest.raises(InputError, match="no 'missing'"):
        agreement(adata, {"siVAE": KEYS.LOADINGS, "other": "missing"})
    table = agreement(adata, {"siVAE": KEYS.LOADINGS, "three": np.random.rand(50, 3)}, dims=[1],
                      key_added=None)
    assert list(table.columns) == ["a", "b", "dim 2", "median", "mean"]


@settings(max_examples=30, deadline=None)
@given(value=st.one_of(st.lists(st.floats(), max_size=4), st.text(max_size=4), st.none(),
                       st.integers()))
def test_any_malformed_interpretation_is_refused_with_one_sentence(value):
    adata = _adata(4, 2)
    with pytest.raises(InputError) as info:
        agreement(adata, {"siVAE": KEYS.LOADINGS, "bad": value}, key_added=None)
    assert "\n" not in str(info.value)


def test_agreement_heatmap_and_loadings_images(tmp_path):
    adata = _adata()
    table = agreement(adata, {"siVAE": KEYS.LOADINGS, "other": -adata.varm[KEYS.LOADINGS]})
    fig = sivae.pl.agreement(table, path=tmp_path / "agreement.png")
    assert isinstance(fig, Figure) and (tmp_path / "agreement.png").stat().st_size > 0
    values = [t.get_text() for t in fig.axes[0].texts]
    assert values == ["1.00"] * 4  # identical ranks up to sign
    # drop constant pixels, as preprocessing does: the image keeps each pixel in its place
    kept = adata[:, 100:].copy()
    fig = sivae.pl.loadings_image(kept, dims=[0, 1], path=tmp_path / "images.png",
                                  loadings={"siVAE": KEYS.LOADINGS, "flipped": -kept.varm[KEYS.LOADINGS]})
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 4
    first = np.ma.filled(images[0].astype(float), np.nan).ravel()
    assert np.isnan(first[:100]).all()
    np.testing.assert_allclose(first[100:], kept.varm[KEYS.LOADINGS][:, 0])
    with pytest.raises(InputError, match="cannot place the features"):
        named = AnnData(np.zeros((2, 10)), var=pd.DataFrame(index=list("abcdefghij")))
        named.varm[KEYS.LOADINGS] = np.ones((10, 2))
        sivae.pl.loadings_image(named)


def test_mnist_digits_one_and_six_images_have_the_image_shape(tmp_path):
    # scikit-learn's 8x8 digits stand in for MNIST: loadings of pixels, drawn in place
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, [1, 6])
    X = digits.data[keep]
    varying = X.std(0) > 0
    adata = AnnData(X[:, varying].astype(np.float32))
    adata.var_names = [f"pixel_{i}" for i in np.flatnonzero(varying)]
    centred = adata.X - adata.X.mean(0)
    adata.varm[KEYS.LOADINGS] = np.linalg.svd(centred, full_matrices=False)[2][:2].T
    fig = sivae.pl.loadings_image(adata, shape=(8, 8), dims=[0, 1])
    assert [ax.images[0].get_array().shape for ax in fig.axes if ax.images] == [(8, 8)] * 2
    assert pd.notna(adata.varm[KEYS.LOADINGS]).all()
