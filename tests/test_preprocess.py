"""sivae.pp: counts kept, genes selected, features z-scored, bad input refused."""

from __future__ import annotations

import json
import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sivae.pp
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.io import write_h5ad

N_CONSTANT = 3  # planted: two all-zero genes and one gene with 5 counts in every cell


def _counts(n_cells: int = 200, n_genes: int = 300, seed: int = 0) -> AnnData:
    # Poisson counts with 4 cell groups; the first 40 genes are group markers (highly variable)
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, n_cells)
    rate = rng.gamma(2.0, 1.0, size=n_genes)[None, :].repeat(n_cells, 0)
    for g in range(4):
        rate[np.ix_(group == g, np.arange(g * 10, g * 10 + 10))] *= 12.0
    X = rng.poisson(rate).astype(np.float32)
    X[:, -3:-1] = 0
    X[:, -1] = 5
    obs = pd.DataFrame(
        {"group": pd.Categorical(group.astype(str))}, index=[f"c{i}" for i in range(n_cells)]
    )
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j:03d}" for j in range(n_genes)]))


def _preprocess(adata: AnnData, **kwargs) -> AnnData:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dropped")
        return sivae.pp.preprocess(adata, copy=True, **kwargs)


@pytest.mark.parametrize("sparse", [False, True])
def test_counts_kept_hvg_selected_and_zscored(sparse):
    raw = _counts()
    if sparse:
        raw.X = sp.csr_matrix(raw.X)
    out = _preprocess(raw, n_top_genes=100, max_value=None)
    assert out.shape == (200, 100)
    counts = out.layers[KEYS.COUNTS]
    counts = counts.toarray() if sp.issparse(counts) else counts
    original = raw[:, out.var_names].X
    np.testing.assert_array_equal(counts, original.toarray() if sparse else original)
    assert out.var[KEYS.HIGHLY_VARIABLE].all()
    # the 40 planted marker genes are enriched (chance: about 13 of them in 100 of 297 genes);
    # seurat_v3 kept 35-38 over 4 seeds of this data, seurat 32-34
    assert len({f"g{j:03d}" for j in range(40)} & set(out.var_names)) >= 33
    assert out.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat_v3"
    np.testing.assert_allclose(out.X.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.X.std(axis=0, ddof=1), 1.0, atol=1e-4)


def test_mean_and_std_undo_the_scaling():
    raw = _counts()
    out = _preprocess(raw, n_top_genes=None, max_value=None)
    counts = raw[:, out.var_names].X
    lognorm = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    restored = out.X * out.var[KEYS.FEATURE_STD].to_numpy() + out.var[KEYS.FEATURE_MEAN].to_numpy()
    np.testing.assert_allclose(restored, lognorm, atol=1e-4)
    assert out.n_vars == 300 - N_CONSTANT  # n_top_genes=None keeps every non-constant gene


def test_clipping_and_in_place_default():
    adata = _counts()
    with pytest.warns(UserWarning, match=f"dropped {N_CONSTANT} of 300 features"):
        assert sivae.pp.preprocess(adata, n_top_genes=50, max_value=2.0) is None
    assert adata.shape == (200, 50)  # changed in place
    assert np.abs(adata.X).max() <= 2.0 + 1e-6
    assert {"g297", "g298", "g299"}.isdisjoint(adata.var_names)


def test_record_is_plain_json_and_survives_h5ad(tmp_path):
    out = _preprocess(_counts(), n_top_genes=100)
    record = out.uns[KEYS.PREPROCESS]
    assert json.loads(json.dumps(record)) == record
    assert record["n_top_genes"] == 100 and record["n_constant_dropped"] == N_CONSTANT
    assert record["n_features_in"] == 300 and record["n_features_out"] == 100
    write_h5ad(out, tmp_path / "p.h5ad")
    back = anndata.read_h5ad(tmp_path / "p.h5ad")
    assert back.uns[KEYS.PREPROCESS]["target_sum"] == 1e4
    np.testing.assert_array_equal(back.var[KEYS.FEATURE_STD], out.var[KEYS.FEATURE_STD])


def test_copy_leaves_input_untouched():
    raw = _counts()
    before = raw.X.copy()
    out = _preprocess(raw, n_top_genes=100)
    assert out is not raw and raw.shape == (200, 300)
    np.testing.assert_array_equal(raw.X, before)
    assert KEYS.COUNTS not in raw.layers


def test_constant_genes_refused_when_not_dropped():
    with pytest.raises(
        InputError, match=f"{N_CONSTANT} of 300 features are constant.*drop_constant=True"
    ):
        sivae.pp.preprocess(_counts(), drop_constant=False, copy=True)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda X: np.log1p(X), r"non-integer values in adata\.X .*use sivae\.pp\.scale_features"),
        (lambda X: X - 1.0, r"negative values in adata\.X"),
        (lambda X: np.where(np.eye(*X.shape, dtype=bool), np.nan, X), r"NaN values in adata\.X"),
    ],
)
def test_non_count_input_refused(change, match):
    adata = _counts()
    adata.X = change(adata.X).astype(np.float32)
    with pytest.raises(InputError, match=match):
        sivae.pp.preprocess(adata)


def test_bad_arguments_refused():
    for kwargs in ({"n_top_genes": 0}, {"target_sum": -1.0}, {"max_value": 0.0}):
        with pytest.raises(InputError, match="must be a (positive|number in)"):
            sivae.pp.preprocess(_counts(), **kwargs)


def test_scale_features_alone_on_sparse_lognormalised():
    rng = np.random.default_rng(1)
    X = sp.random(50, 20, density=0.3, random_state=rng, dtype=np.float32).toarray() * 3.0
    X[:, 0] = 0.0  # a constant feature: stays 0, std recorded as 1
    adata = AnnData(X=sp.csr_matrix(X))
    sivae.pp.scale_features(adata, max_value=None)
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.float32
    np.testing.assert_allclose(adata.X[:, 1:].std(axis=0, ddof=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(adata.X[:, 0], 0.0)
    assert adata.var[KEYS.FEATURE_STD].iloc[0] == 1.0
    assert adata.uns[KEYS.PREPROCESS]["scaled"] is True
    with pytest.raises(InputError, match="at least 2 cells"):
        sivae.pp.scale_features(AnnData(np.ones((1, 3), dtype=np.float32)))


def test_dropping_features_keeps_every_field_aligned():
    from sivae.data.record import subset_features

    adata = _counts()
    adata.varm["v"] = np.arange(adata.n_vars * 2, dtype=float).reshape(-1, 2)
    adata.obsm["o"] = np.ones((adata.n_obs, 3))
    adata.layers["l"] = adata.X.copy()
    keep = np.arange(adata.n_vars) % 3 != 0
    names, first = adata.var_names[keep], adata.X[:, keep].copy()
    same = adata
    subset_features(adata, keep)
    assert adata is same and adata.shape == (200, int(keep.sum())) and not adata.is_view
    assert list(adata.var_names) == list(names)
    np.testing.assert_array_equal(adata.varm["v"][:, 0], 2 * np.flatnonzero(keep))
    np.testing.assert_array_equal(adata.layers["l"], first)
    assert adata.obsm["o"].shape == (200, 3)


def test_the_seurat_flavour_on_log_data_is_still_offered():
    # seurat's per-mean-bin normalisation ranks some markers against each other, so not all are kept
    out = _preprocess(_counts(), n_top_genes=100, flavor="seurat")
    assert len({f"g{j:03d}" for j in range(40)} & set(out.var_names)) >= 30
    assert out.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat" and "dispersions_norm" in out.var


def test_a_flavour_that_cannot_run_is_refused_before_any_change(monkeypatch):
    raw = _counts()
    with pytest.raises(InputError, match="flavor must be one of 'seurat_v3', 'seurat'; got 'cell_ranger'"):
        sivae.pp.preprocess(raw, flavor="cell_ranger")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skmisc" else real(name, *a))
    with pytest.raises(InputError, match="needs the scikit-misc package .* or pass flavor='seurat'"):
        sivae.pp.preprocess(raw)
    assert raw.shape == (200, 300) and KEYS.COUNTS not in raw.layers


def test_too_few_genes_for_the_loess_fall_back_to_seurat_with_a_warning():
    # skmisc's loess crashes the process on 3 genes and fails on 5-10: it is never tried below 50
    raw = _counts(n_genes=45)  # 42 of them not constant
    with pytest.warns(UserWarning, match="42 genes are too few for its loess fit"):
        out = _preprocess(raw, n_top_genes=10)
    assert out.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat" and out.n_vars == 10

