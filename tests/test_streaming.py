"""Out-of-core preprocessing and training: a file on disk gives what the same data in memory give."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sivae
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.backed import read_backed, training_matrix
from sivae.data.simulate import simulate_large

N_CELLS, N_FEATURES, N_TOP = 1200, 400, 150
SMALL = dict(n_latent=2, encoder_hidden=(16, 8), c_red=10, batch_size=128, seed=3, device="cpu")


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory):
    """Planted cell types, plus an all-zero gene and a gene with 2 counts in every cell."""
    folder = tmp_path_factory.mktemp("streaming")
    raw = folder / "raw.h5ad"
    simulate_large(raw, N_CELLS, N_FEATURES - 2, n_programs=4, density=0.08, progress=False)
    adata = ad.read_h5ad(raw)
    extra = np.zeros((N_CELLS, 2), dtype=np.float32)
    extra[:, 1] = 2.0
    adata = ad.AnnData(sp.hstack([adata.X, sp.csr_matrix(extra)], format="csr"), obs=adata.obs,
                       var={"gene": [*adata.var_names, "all_zero", "constant"]})
    adata.var_names = adata.var["gene"].astype(str)
    path = folder / "counts.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def pair(counts_file):
    """The file preprocessed in memory and on disk, the same way."""
    memory = ad.read_h5ad(counts_file)
    with pytest.warns(UserWarning, match="dropped 2 of"):
        sivae.pp.preprocess(memory, n_top_genes=N_TOP)
    backed = read_backed(counts_file)
    assert backed.X is None
    with pytest.warns(UserWarning, match="dropped 2 of"):
        sivae.pp.preprocess(backed, n_top_genes=N_TOP, progress=False)
    return memory, backed


def test_preprocessing_a_file_selects_and_scales_as_in_memory(pair):
    memory, backed = pair
    assert list(backed.var_names) == list(memory.var_names)  # same highly variable genes (seurat_v3)
    assert backed.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat_v3"
    for key in (KEYS.FEATURE_MEAN, KEYS.FEATURE_STD, "variances_norm", "means", "variances"):
        np.testing.assert_allclose(backed.var[key], memory.var[key], rtol=1e-5, atol=1e-6)
    rows = np.array([0, 17, 17, N_CELLS - 1, 600])
    # the constant gene's counts are left out of the library sizes, as in memory
    np.testing.assert_allclose(training_matrix(backed).rows(rows).numpy(), memory.X[rows], atol=1e-4)
    info = backed.uns[KEYS.PREPROCESS]
    assert info["backed"] and info["n_constant_dropped"] == 2 and info["n_features_out"] == N_TOP


def test_the_seurat_flavour_from_a_file_selects_as_in_memory(counts_file):
    memory, backed = ad.read_h5ad(counts_file), read_backed(counts_file)
    with pytest.warns(UserWarning, match="dropped 2 of"):
        sivae.pp.preprocess(memory, n_top_genes=N_TOP, flavor="seurat")
    with pytest.warns(UserWarning, match="dropped 2 of"):
        sivae.pp.preprocess(backed, n_top_genes=N_TOP, flavor="seurat", progress=False)
    assert list(backed.var_names) == list(memory.var_names)
    np.testing.assert_allclose(backed.var["dispersions_norm"], memory.var["dispersions_norm"], rtol=1e-5, atol=1e-5)
    assert backed.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat"


def test_training_from_a_file_gives_the_in_memory_embedding(pair, one_thread):
    memory, backed = pair
    sivae.SIVAE(memory, **SMALL).train(4, progress=False)
    model = sivae.SIVAE(backed, **SMALL).train(4, progress=False)
    np.testing.assert_allclose(backed.obsm[KEYS.CELL_EMBEDDING], memory.obsm[KEYS.CELL_EMBEDDING], atol=1e-3)
    np.testing.assert_allclose(backed.varm[KEYS.LOADINGS], memory.varm[KEYS.LOADINGS], atol=1e-3)
    np.testing.assert_allclose(backed.var[KEYS.CENTRALITY], memory.var[KEYS.CENTRALITY], atol=1e-3)
    # held-out cells of a backed file are embedded from the file too
    np.testing.assert_allclose(model.get_cell_embedding(backed), backed.obsm[KEYS.CELL_EMBEDDING], atol=1e-6)


def test_sparse_and_dense_inputs_give_the_same_model(pair, one_thread):
    memory, _ = pair
    dense = memory.copy()
    sparse = memory.copy()
    sparse.X = sp.csr_matrix(np.where(np.abs(sparse.X) < 0.5, 0, sparse.X))  # zeros worth storing
    dense.X = sparse.X.toarray()
    for data in (dense, sparse):
        sivae.SIVAE(data, **SMALL).train(3, progress=False)
    assert np.array_equal(dense.obsm[KEYS.CELL_EMBEDDING], sparse.obsm[KEYS.CELL_EMBEDDING])
    assert np.array_equal(dense.varm[KEYS.LOADINGS], sparse.varm[KEYS.LOADINGS])


def test_scaling_normalised_values_on_disk_matches_memory(tmp_path):
    rng = np.random.default_rng(0)
    X = sp.random(300, 40, density=0.3, format="csr", dtype=np.float32, rng=rng)
    X.data = np.log1p(X.data * 50).astype(np.float32)
    X = X.tolil()
    X[:, 5] = 0  # all zero: dropped on disk, scaled to zeros in memory
    path = tmp_path / "logged.h5ad"
    ad.AnnData(X.tocsr()).write_h5ad(path)
    memory = ad.read_h5ad(path)
    sivae.pp.scale_features(memory, max_value=None)
    backed = read_backed(path)
    with pytest.warns(UserWarning, match="dropped 1 of 40"):
        sivae.pp.scale_features(backed, max_value=None, progress=False)
    kept = np.delete(np.arange(40), 5)
    np.testing.assert_allclose(training_matrix(backed).rows(np.arange(300)).numpy(), memory.X[:, kept],
                               atol=1e-5)


# -- bad input: one sentence each ------------------------------------------------------------------
def test_refuses_values_that_are_not_counts(tmp_path):
    path = tmp_path / "logged.h5ad"
    ad.AnnData(sp.csr_matrix(np.full((20, 3), 0.5, dtype=np.float32))).write_h5ad(path)
    with pytest.raises(InputError, match="not raw counts; for normalised data use sivae.pp.scale_features"):
        sivae.pp.preprocess(read_backed(path), progress=False)


def test_refuses_nan(tmp_path):
    X = np.ones((20, 3), dtype=np.float32)
    X[4, 1] = np.nan
    path = tmp_path / "nan.h5ad"
    ad.AnnData(sp.csr_matrix(X)).write_h5ad(path)
    with pytest.raises(InputError, match="NaN or infinite"):
        sivae.pp.scale_features(read_backed(path), progress=False)


def test_refuses_a_file_that_does_not_fit_backed_mode(tmp_path, counts_file):
    dense = tmp_path / "dense.h5ad"
    ad.AnnData(np.ones((5, 2), dtype=np.float32)).write_h5ad(dense)
    with pytest.raises(InputError, match="dense matrix, and backed training needs a CSR matrix"):
        read_backed(dense)
    csv = tmp_path / "cells.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="must be an .h5ad file"):
        read_backed(csv)


def test_model_refuses_a_backed_anndata_it_cannot_use(counts_file):
    raw = read_backed(counts_file)
    with pytest.raises(InputError, match="run sivae.pp.preprocess .* or sivae.pp.scale_features"):
        sivae.SIVAE(raw, **SMALL)
    with pytest.raises(InputError, match="'nb' needs the counts in memory"):
        sivae.SIVAE(raw, likelihood="nb", **SMALL)
    with pytest.raises(InputError, match="to_memory"):
        sivae.pp.preprocess(ad.read_h5ad(counts_file, backed="r"))


def test_refuses_a_file_whose_cells_changed(tmp_path, counts_file, pair):
    _, backed = pair
    moved = backed.copy()
    other = tmp_path / "other.h5ad"
    ad.AnnData(sp.csr_matrix(np.ones((7, N_FEATURES), dtype=np.float32))).write_h5ad(other)
    moved.uns[KEYS.BACKED] = {"path": str(other), "layer": ""}
    with pytest.raises(InputError, match="holds 7 cells but adata has 1200"):
        sivae.SIVAE(moved, **SMALL)


def test_seurat_v3_across_batches_from_a_file_warns_and_uses_seurat(counts_file):
    backed = read_backed(counts_file)
    backed.obs["sample"] = np.arange(backed.n_obs) % 2
    with pytest.warns(UserWarning, match="seurat_v3 across batches is not computed from a backed file"):
        sivae.pp.preprocess(backed, n_top_genes=N_TOP, batch_key="sample", progress=False)
    assert backed.uns[KEYS.PREPROCESS]["highly_variable_flavor"] == "seurat" and backed.n_vars == N_TOP
