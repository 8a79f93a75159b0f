"""GRN methods (CLR, MRNET, ARACNE, GRNBoost2), the MI estimator, degree centrality, edge recovery.

Hand-computed values on a 4-gene MI matrix check each method's definition; the simulated network
(hub-and-spoke communities with known edges) checks that the methods recover real edges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import aracne, clr, degree_centrality, edge_recovery, grn, mrnet, mutual_information

# genes A, B, C, D; no two sums or differences below tie, so every greedy choice is clear
MI = np.array([
    [0.0, 0.9, 0.5, 0.1],
    [0.9, 0.0, 0.4, 0.2],
    [0.5, 0.4, 0.0, 0.35],
    [0.1, 0.2, 0.35, 0.0],
])
A, B, C, D = range(4)


@pytest.fixture(scope="module")
def network():
    return sivae.datasets.simulated_network(n_cells=2000, seed=0)


def _symmetric(entries: dict[tuple[int, int], float]) -> np.ndarray:
    w = np.zeros((4, 4))
    for (i, j), value in entries.items():
        w[i, j] = w[j, i] = value
    return w


def test_clr_matches_hand_computation():
    # z of MI_ij within gene i's row (diagonal left out, population sd), negatives set to 0
    def z(row, value):
        others = np.delete(MI[row], row)
        return max(0.0, (value - others.mean()) / others.std())

    expected = _symmetric({
        (A, B): np.hypot(z(A, 0.9), z(B, 0.9)),  # both above their rows' means
        (A, C): z(C, 0.5),  # A's row mean is 0.5 itself: z_A = 0
        (C, D): z(D, 0.35),  # below C's row mean 0.4167: z_C = 0
    })
    assert z(A, 0.9) == pytest.approx(0.4 / np.sqrt(0.32 / 3))
    np.testing.assert_allclose(clr(MI), expected, atol=1e-12)


def test_mrnet_matches_hand_computation():
    # target A picks B (0.9), then C (0.5 - MI(C,B) = 0.1), then stops (D: 0.1 - 0.275 < 0);
    # B picks A (0.9), D (0.2 - 0.1); C picks A (0.5), D (0.35 - 0.1); D picks C (0.35) and stops
    expected = _symmetric({(A, B): 0.9, (A, C): 0.5, (B, D): 0.1, (C, D): 0.35})
    np.testing.assert_allclose(mrnet(MI), expected, atol=1e-12)


def test_aracne_matches_hand_computation():
    # A-D (0.1 < min(A-B, B-D) = 0.2), B-C (0.4 < min(A-B, A-C) = 0.5) and B-D (0.2 < C's 0.35)
    # are the weakest edges of a triangle and go; the rest keep their MI
    expected = _symmetric({(A, B): 0.9, (A, C): 0.5, (C, D): 0.35})
    np.testing.assert_allclose(aracne(MI), expected, atol=1e-7)
    # a tolerance keeps edges within eps of the triangle's weaker side
    assert aracne(MI, eps=0.16)[B, D] == pytest.approx(0.2)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9])
def test_mutual_information_matches_the_bivariate_gaussian_closed_form(rho):
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, rho], [rho, 1.0]])
    X = rng.multivariate_normal([0, 0], cov, size=20_000)
    closed_form = -0.5 * np.log(1 - rho**2)
    assert mutual_information(X)[0, 1] == pytest.approx(closed_form, abs=0.01)
    # a copula estimator ignores monotone transforms of each gene
    np.testing.assert_allclose(mutual_information(np.exp(X) * [1, 5]), mutual_information(X), atol=1e-12)


@given(st.integers(3, 30), st.integers(2, 6), st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_mi_and_networks_are_symmetric_nonnegative_and_zero_on_the_diagonal(n_cells, n_genes, seed):
    X = np.random.default_rng(seed).normal(size=(n_cells, n_genes))
    X[:, 0] = 1.0  # a constant gene has no information about any other
    mi = mutual_information(X)
    assert np.isfinite(mi).all() and (mi >= 0).all()
    assert (mi[0] == 0).all()
    for method in (clr, mrnet, aracne):
        w = method(mi)
        np.testing.assert_allclose(w, w.T, atol=1e-12)
        assert (w >= 0).all() and (np.diag(w) == 0).all()


@pytest.mark.parametrize("method", ["clr", "mrnet", "aracne"])
def test_mi_methods_recover_the_simulated_network(network, method):
    edges = network.uns[KEYS.SIMULATED_NETWORK]["edges"]
    weights = grn(network, method=method)
    scores = edge_recovery(weights, edges)
    print(f"\n{method}: AUROC {scores['auroc']:.3f}, AUPRC ratio {scores['auprc_ratio']:.1f}, "
          f"EPR {scores['early_precision_ratio']:.1f}")
    assert scores["auroc"] > 0.9
    assert scores["early_precision_ratio"] > 50  # far above a random network's 1
    assert np.array_equal(network.varp[f"{KEYS.GRN}_{method}"], weights.to_numpy())
    # the hubs have the highest degree centrality
    top5 = degree_centrality(weights).nlargest(5).index
    assert network.var.loc[top5, KEYS.IS_HUB].all()


def test_grnboost2_recovers_a_small_network():
    small = sivae.datasets.simulated_network(n_cells=400, n_communities=2, community_size=8, n_isolated=4, seed=1)
    edges = small.uns[KEYS.SIMULATED_NETWORK]["edges"]
    weights = grn(small, method="grnboost2", learning_rate=0.1, max_trees=300)
    scores = edge_recovery(weights, edges)
    print(f"\ngrnboost2 (20 genes, 400 cells): AUROC {scores['auroc']:.3f}")
    assert scores["auroc"] > 0.9
    # regulators restricts the inputs: a non-regulator gets no outgoing weight
    hubs = list(small.var_names[small.var[KEYS.IS_HUB]])
    restricted = grn(small, method="grnboost2", regulators=hubs, learning_rate=0.1, max_trees=100)
    others = ~small.var_names.isin(hubs)
    assert (restricted.to_numpy()[others] == 0).all()
    assert restricted.loc[hubs[0], small.var_names[1]] > 0


def test_edge_recovery_scores_a_perfect_and_a_reversed_network():
    truth = np.array([[0, 1], [2, 3]])
    perfect = _symmetric({(0, 1): 1.0, (2, 3): 1.0})
    scores = edge_recovery(perfect, truth)
    assert scores["auroc"] == 1.0 and scores["early_precision"] == 1.0
    assert scores["density"] == pytest.approx(2 / 6)
    assert scores["auprc_ratio"] == pytest.approx(3.0)
    reversed_ = 1.0 - perfect
    assert edge_recovery(reversed_, truth)["auroc"] == 0.0


def test_degree_centrality_is_the_mean_weight_to_the_other_genes():
    w = pd.DataFrame(MI, index=list("ABCD"), columns=list("ABCD"))
    np.testing.assert_allclose(degree_centrality(w).to_numpy(), [0.5, 0.5, 1.25 / 3, 0.65 / 3])
    # directed: the larger of the two directions
    directed = np.array([[0.0, 2.0], [0.5, 0.0]])
    assert degree_centrality(directed).tolist() == [2.0, 2.0]


def test_bad_input_gets_one_sentence(network):
    with pytest.raises(InputError, match="unknown method 'pearson'; choose one of clr"):
        grn(network, method="pearson")
    with pytest.raises(InputError, match=r"needs about .* GiB of memory but 1.0 KiB is available"):
        grn(AnnData(np.zeros((5, 20_000), dtype=np.float32)), max_memory=1024)
    with pytest.raises(InputError, match=r"\['regulators'\] apply to method 'grnboost2' only"):
        grn(network, method="clr", regulators=["c0_hub"])
    with pytest.raises(InputError, match="did you mean c0_hub"):
        grn(network, method="grnboost2", regulators=["c0_hup"])
    with pytest.raises(InputError, match="square"):
        degree_centrality(np.zeros((3, 2)))
    with pytest.raises(InputError, match="E x 2 list of gene pairs"):
        edge_recovery(np.zeros((3, 3)), np.empty((0, 2), dtype=int))
    with pytest.raises(InputError, match="some but not all"):
        edge_recovery(np.zeros((2, 2)), [[0, 1]])
    with pytest.raises(InputError, match="NaN"):
        mutual_information(np.array([[np.nan, 1.0], [0.0, 1.0], [1.0, 2.0]]))


def test_cli_grn_writes_an_edge_list(network, tmp_path, capsys):
    from sivae.cli import main

    path, out = tmp_path / "cells.h5ad", tmp_path / "net.csv"
    network.write_h5ad(path)
    assert main(["grn", str(path), "--method", "mrnet", "-o", str(out)]) == 0
    edges = pd.read_csv(out)
    assert list(edges.columns) == ["source", "target", "weight"]
    assert edges["weight"].is_monotonic_decreasing and (edges["weight"] > 0).all()
    truth = {frozenset(e) for e in network.uns[KEYS.SIMULATED_NETWORK]["edges"]}
    strongest = {frozenset(e) for e in edges[["source", "target"]].to_numpy()[:200]}
    assert strongest <= truth  # MRNET's 200 strongest edges are all real
    assert main(["grn", str(path), "--method", "mrnet", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["grn", str(path), "--method", "pearson", "-o", str(out)]) == 2
