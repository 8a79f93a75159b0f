"""Hubs, siVAE-Euc neighbours, the hub-rank bootstrap and the neighbourhood benchmark, on one small
siVAE trained on the simulated network (shared with test_sample.py through ``trained_network``).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import centrality_ci, compare_neighborhoods, grn, hubs, neighbors


@functools.lru_cache(maxsize=1)
def trained_network() -> tuple[AnnData, sivae.SIVAE]:
    """One siVAE (K=8, as the five communities need) on 2,000 cells, trained once per session."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adata = sivae.datasets.simulated_network(n_cells=2000, seed=0)
        model = sivae.SIVAE(adata, n_latent=8, encoder_hidden=(128, 64), seed=0, device="cpu")
        model.train(max_epochs=60, progress=False)  # step 1 a VAE run long enough to sample from
    finally:
        torch.set_num_threads(n_threads)
    return adata, model


@pytest.fixture(scope="module")
def network() -> tuple[AnnData, sivae.SIVAE]:
    return trained_network()


def test_all_five_hubs_are_in_the_top_ten(network):
    adata, _ = network
    top = hubs(adata, n=10)
    found = int(adata.var.loc[top.index, KEYS.IS_HUB].sum())
    print(f"\nsiVAE centrality: {found} of 5 hubs in the top 10")
    assert found == 5


def test_euclidean_neighbours_of_a_spoke_come_from_its_community(network):
    adata, _ = network
    community = adata.var[KEYS.COMMUNITY]
    shares = []
    for gene in ("c0_g05", "c2_g17", "c4_g40"):
        near = neighbors(adata, gene=gene, k=20)
        assert len(near) == 20 and gene not in near.index
        assert near.is_monotonic_increasing
        shares.append(float((community[near.index] == community[gene]).mean()))
    print(f"\nsiVAE-Euc: own-community share of 20 neighbours {shares}")
    assert min(shares) >= 0.8


def test_rank_intervals_separate_the_hubs_from_the_rest(network):
    adata, model = network
    ci = centrality_ci(model, n_boot=100, seed=0)
    is_hub = adata.var[KEYS.IS_HUB].to_numpy()
    np.testing.assert_allclose(ci["centrality"], adata.var[KEYS.CENTRALITY], atol=1e-5)
    assert (ci["rank_low"] <= ci["rank"]).all() and (ci["rank"] <= ci["rank_high"]).all()
    # every hub's interval lies inside the top 5, so the hub calls are stable
    assert (ci.loc[is_hub, "rank_high"] <= 5).all()
    assert np.array_equal(adata.var[KEYS.CENTRALITY_RANK_HIGH], ci["rank_high"].to_numpy())
    # a spoke's rank wanders over many places: the intervals are not degenerate
    assert (ci.loc[~is_hub, "rank_high"] - ci.loc[~is_hub, "rank_low"]).median() > 5
    # the same seed gives the same intervals; another seed other ones
    again = centrality_ci(model, n_boot=100, seed=0)
    pd.testing.assert_frame_equal(ci, again)


def test_compare_neighborhoods_scores_and_overlaps(network, one_thread):
    adata, _ = network
    clr = grn(adata, method="clr")
    query = ["c0_hub", "c1_g03", "c2_g10", "c3_g22", "iso_03"]
    result = compare_neighborhoods(adata, {"siVAE": KEYS.LOADINGS, "CLR": clr}, k=10, query=query,
                                   epochs=40, seed=0)
    pve = result["pve"]
    print(f"\nneighbourhood PVE (held-out cells):\n{pve.round(3)}\njaccard:\n{result['jaccard'].round(3)}")
    assert list(pve.index) == query and list(pve.columns) == ["siVAE", "CLR"]
    # a hub's neighbours (its spokes, rho = 0.6 each) explain much of it; an isolated gene's nothing
    assert (pve.loc["c0_hub"] > 0.5).all()
    assert (pve.loc["iso_03"] < 0.1).all()
    jaccard, corr = result["jaccard"], result["correlation"]
    assert (np.diag(jaccard) == 1).all() and 0 < jaccard.loc["siVAE", "CLR"] < 1
    np.testing.assert_allclose(corr, corr.T)
    assert corr.loc["CLR", "CLR"] > 0.1  # a community's genes are correlated through its hub
    assert result["neighbors"]["CLR"].shape == (5, 10)
    assert adata.uns[KEYS.NEIGHBORHOODS]["query"] == query


def test_default_queries_are_the_intersection_of_central_genes(network):
    adata, _ = network
    clr = grn(adata, method="clr")
    result = compare_neighborhoods(adata, {"siVAE": KEYS.LOADINGS, "CLR": clr}, k=5, n_top=10, epochs=1)
    sivae_top = set(adata.var[KEYS.CENTRALITY].nlargest(10).index)
    clr_top = set(sivae.tl.degree_centrality(clr).nlargest(10).index)
    assert set(result["query"]) == sivae_top & clr_top
    assert set(result["query"]) >= set(adata.var_names[adata.var[KEYS.IS_HUB]])


def test_bad_input_gets_one_sentence(network):
    adata, _ = network
    with pytest.raises(InputError, match="gene 'c0_hubb' is not in the data; did you mean c0_hub"):
        neighbors(adata, gene="c0_hubb")
    with pytest.raises(InputError, match="k=300 neighbours need more genes than the 300"):
        neighbors(adata, gene="c0_hub", k=300)
    with pytest.raises(InputError, match="adata.varm has no 'sivae_loadings'; train a model"):
        neighbors(AnnData(np.zeros((3, 4), dtype=np.float32)), gene="0")
    with pytest.raises(InputError, match="at least one entry"):
        compare_neighborhoods(adata, {})
    with pytest.raises(InputError, match="needs a trained model"):
        centrality_ci(sivae.SIVAE(adata.copy(), n_latent=2, encoder_hidden=(8,), device="cpu"))


def test_cli_hubs_and_neighbors(network, tmp_path, capsys):
    from sivae.cli import main

    adata, _ = network
    path = tmp_path / "out.h5ad"
    adata.write_h5ad(path)
    assert main(["hubs", str(path), "--top", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t")[1] == "gene" and len(lines) == 6
    assert {line.split("\t")[1] for line in lines[1:]} == set(adata.var_names[adata.var[KEYS.IS_HUB]])
    assert main(["neighbors", str(path), "--gene", "c0_g05", "--k", "20"]) == 0
    genes = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert genes == list(neighbors(adata, gene="c0_g05", k=20).index)
    assert main(["neighbors", str(path), "--gene", "c0_g5"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_network_figures(network, tmp_path):
    from matplotlib.figure import Figure

    adata, _ = network
    truth = adata.var[KEYS.CENTRALITY].rank() / adata.n_vars  # any per-gene Series will do here
    clr = sivae.tl.degree_centrality(grn(adata, method="clr"))
    methods = {"siVAE": adata.var[KEYS.CENTRALITY], "CLR": clr}
    fig = sivae.pl.centrality_truth(methods, truth, path=tmp_path / "a.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and "Spearman 1.00" in fig.axes[0].get_title()
    fig = sivae.pl.cumulative_truth(methods, truth, n=10, path=tmp_path / "b.png")
    assert len(fig.axes[0].lines) == 3
    table = pd.DataFrame({"siVAE": [0.5, 0.7], "CLR": [0.6, 0.6]})
    sivae.pl.neighborhood_pve({"pve": table}, path=tmp_path / "c.png")
    sivae.pl.overlap(pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"]), path=tmp_path / "d.svg")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("a.png", "b.png", "c.png", "d.svg"))
    with pytest.raises(InputError, match="pandas Series"):
        sivae.pl.centrality_truth({"x": [1, 2, 3]}, truth)
