"""Whole runs on small data that check what the paper claims, not just that the code runs.

The figures each test measures are printed (``pytest -s`` shows them) so CI logs record them.
"""

from __future__ import annotations

import numpy as np
import pytest

import sivae
from sivae._constants import KEYS
from sivae.tl import hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def network():
    # the paper's network at 3,000 cells; K=8 leaves room for the five communities' programmes
    adata = sivae.datasets.simulated_network(n_cells=3000, seed=0)
    model = sivae.SIVAE(adata, n_latent=8, encoder_hidden=(256, 128), seed=0, device="cpu")
    model.train(max_epochs=30, progress=False)
    return adata


def test_loadings_group_communities_and_shrink_isolated_genes(network):
    var = network.var
    loadings = network.varm[KEYS.LOADINGS]
    isolated = var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    silhouette = loading_silhouette(loadings[~isolated], var[KEYS.COMMUNITY][~isolated])
    ratio = isolated_norm_ratio(loadings, isolated)
    print(f"\nsimulated network: loading silhouette {silhouette:.3f}, "
          f"isolated/community loading norm {ratio:.3f}")
    assert silhouette > 0.5
    assert ratio < 0.5
    # stronger than the silhouette: every community is nearer its own centroid than any other's
    labels = var[KEYS.COMMUNITY][~isolated].to_numpy()
    centroids = {c: loadings[~isolated][labels == c].mean(0) for c in np.unique(labels)}
    names = list(centroids)
    distance = np.stack([np.linalg.norm(loadings[~isolated] - centroids[c], axis=1) for c in names])
    nearest = np.asarray(names)[distance.argmin(0)]
    assert (nearest == labels).mean() > 0.95


def test_planted_hubs_rank_at_the_top(network):
    centrality = network.var[KEYS.CENTRALITY]
    found = hubs_in_top(centrality, network.var[KEYS.IS_HUB], top=10)
    print(f"\nsimulated network: {found} of 5 hubs in the top 10 by reconstruction accuracy")
    assert found >= 4


def test_sivae_embedding_separates_cell_types_as_well_as_a_vae():
    scores = {}
    for cls in (sivae.VAE, sivae.SIVAE):
        adata = sivae.datasets.pbmc68k_reduced()
        model = cls(adata, n_latent=2, batch_size=128, seed=0, device="cpu")
        model.train(max_epochs=100, progress=False)
        embedding = adata.obsm[model.keys.cell_embedding]
        scores[cls.__name__] = knn_accuracy(embedding, adata.obs[KEYS.CELL_TYPE], k=15)
    print(f"\npbmc68k_reduced 15-NN accuracy (5-fold): siVAE {scores['SIVAE']:.3f}, "
          f"VAE {scores['VAE']:.3f}")
    assert scores["VAE"] > 0.6  # the comparison means something only if the VAE learned
    assert scores["SIVAE"] >= scores["VAE"] - 0.03
