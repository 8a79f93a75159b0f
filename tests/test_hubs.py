"""Hub centrality: the accuracy of a (nearly) constant feature, stability of tl.hubs, the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from anndata import AnnData

import sivae
from sivae.cli import main
from sivae._constants import KEYS
from sivae.models.accuracy import FORMULAS, accuracy_from_sums, centrality_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def _sums(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return centrality_terms(torch.from_numpy(truth), torch.from_numpy(pred)).sum(0).numpy()


def test_accuracy_is_nan_for_a_constant_feature_and_exact_otherwise():
    truth = np.array([[1.0, 5.0, 5.0, 0.0], [2.0, 5.0, 5.0, 0.0], [3.0, 5.0, 5.0 + 1e-6, 0.0]])
    pred = np.array([[2.0, 5.0, 5.0, 0.1], [2.0, 4.0, 5.0, 0.1], [2.0, 5.0, 5.0, 0.1]])
    # column 0: a flat reconstruction follows nothing (correlation 0; MSE 2/3 on variance 2/3 -> 0);
    # columns 1-3: constant (up to rounding) -> NaN under every formula
    sums = _sums(truth, pred)
    expected = np.array([0.0, np.nan, np.nan, np.nan])
    for formula in FORMULAS:
        np.testing.assert_allclose(accuracy_from_sums(sums, n=3, formula=formula), expected, atol=1e-12)
    replicates = np.stack([sums, sums])  # the bootstrap's (R=2, 5, F) replicates, n (R, 1)
    np.testing.assert_allclose(accuracy_from_sums(replicates, n=np.array([[3.0], [3.0]])), [expected] * 2, atol=1e-12)
    # each formula by hand on a reconstruction that follows the truth, shrunk and shifted
    pred[:, 0] = [1.5, 2.0, 2.5]  # p = (t + 2) / 2: correlation 1, MSE 1/6 on variance 2/3, no residual shift
    for formula, value in (("correlation", 1.0), ("r2", 0.75), ("paper", 1 - (1 / 6) / (2 / 3))):
        np.testing.assert_allclose(accuracy_from_sums(_sums(truth, pred), n=3, formula=formula)[0], value)
    pred[:, 0] += 1.0  # off by one in mean: the correlation and the paper's formula do not see it
    by = {f: accuracy_from_sums(_sums(truth, pred), n=3, formula=f)[0] for f in FORMULAS}
    np.testing.assert_allclose([by["correlation"], by["paper"]], [1.0, 0.75])
    np.testing.assert_allclose(by["r2"], -0.75)  # mean squared error 7/6 on variance 2/3
    pred[:, 0] = [3.0, 2.0, 1.0]  # following it backwards
    np.testing.assert_allclose(accuracy_from_sums(_sums(truth, pred), n=3)[0], -1.0)


@given(arrays(np.float64, (12, 3), elements=st.floats(-5, 5)), arrays(np.float64, (12, 3), elements=st.floats(-5, 5)))
@settings(max_examples=40, deadline=None)
def test_correlation_from_sums_matches_numpy(truth, pred):
    value = accuracy_from_sums(_sums(truth, pred), n=len(truth))
    for j in range(truth.shape[1]):
        if np.isnan(value[j]):  # only for a truth constant up to rounding
            assert np.ptp(truth[:, j]) < 0.03  # variance under 1e-6 of the largest scale, 25
        elif np.std(pred[:, j]) > 0.01:  # a reconstruction well above the flatness floor
            np.testing.assert_allclose(value[j], np.corrcoef(truth[:, j], pred[:, j])[0, 1], atol=1e-6)
        assert np.isnan(value[j]) or -1.0 <= value[j] <= 1.0


def test_accuracy_refuses_an_unknown_formula():
    with pytest.raises(sivae.InputError, match="formula must be one of"):
        accuracy_from_sums(np.zeros((5, 2)), n=3, formula="spearman")


def test_a_gene_seen_in_one_cell_is_nan_off_its_cell_and_sane_on_it():
    rng = np.random.default_rng(0)
    n_cells, n_genes = 120, 12
    group = np.arange(n_cells) % 2
    counts = rng.poisson(np.where(group[:, None] == 1, 12.0, 4.0), size=(n_cells, n_genes)).astype(np.float32)
    model = sivae.SIVAE(_scaled(counts), n_latent=2, encoder_hidden=(16, 8), c_red=6, batch_size=32, device="cpu")
    held_out, trained = int(model.val_idx[0]), int(model.train_idx[0])
    counts[:, :2] = 0  # gene0 seen only in a held-out cell, gene1 only in a training cell
    counts[held_out, 0], counts[trained, 1] = 30, 30
    adata = _scaled(counts)
    model = sivae.SIVAE(adata, n_latent=2, encoder_hidden=(16, 8), c_red=6, batch_size=32, device="cpu")
    with pytest.warns(UserWarning, match="1 features are constant on the training cells"):
        model.train(max_epochs=2, progress=False)
    centrality = adata.var[KEYS.CENTRALITY]
    assert np.isnan(centrality["gene0"])
    assert list(adata.uns["sivae"]["centrality_undefined"]) == ["gene0"]
    assert np.isfinite(centrality.drop("gene0")).all()
    assert centrality["gene1"] > -10  # a gene seen in one training cell: poorly reconstructed, not absurd
    assert "gene0" not in sivae.tl.hubs(adata, n=n_genes).index
    ci = sivae.tl.centrality_ci(model, n_boot=5)
    assert np.isnan(ci.loc["gene0", "centrality"]) and ci.loc["gene0", "rank"] == n_genes  # ranked last


def _scaled(counts: np.ndarray) -> AnnData:
    X = np.log1p(counts)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    adata = AnnData(X, var=pd.DataFrame(index=[f"gene{j}" for j in range(counts.shape[1])]))
    adata.obs_names = [f"cell{i}" for i in range(counts.shape[0])]
    adata.layers[KEYS.COUNTS] = counts
    return adata


def test_centrality_plot_keeps_the_bulk_visible_beside_an_absurd_value():
    adata = AnnData(np.zeros((3, 50), dtype=np.float32))
    adata.var_names = [f"g{j}" for j in range(50)]
    scores = np.linspace(0.1, 0.9, 50)
    scores[-1] = -1.4e9
    adata.var[KEYS.CENTRALITY] = scores
    fig = sivae.pl.centrality(adata)
    low, high = fig.axes[0].get_ylim()
    assert low > -5 and high < 5  # the outlier no longer sets the axis
    assert "1 features below" in fig.axes[0].get_title()


# -- baselines and measures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted() -> AnnData:
    # 3 hub-and-spoke communities of 10 genes plus 10 isolated genes: the hubs are known
    return sivae.datasets.simulated_network(400, n_communities=3, community_size=10, n_isolated=10, seed=1)


def test_the_planted_hubs_rank_first_under_correlation_degree_and_pca(planted):
    hubs = set(planted.var_names[planted.var[KEYS.IS_HUB].to_numpy(bool)])
    assert set(sivae.tl.correlation_degree(planted).nlargest(3).index) == hubs
    assert set(sivae.tl.pca_centrality(planted, n_components=3).nlargest(3).index) == hubs
    assert planted.varm["pca_loadings"].shape == (planted.n_vars, 3)
    network = sivae.tl.correlation_network(planted)
    np.testing.assert_allclose(sivae.tl.degree_centrality(network), sivae.tl.correlation_degree(planted))


def test_detection_rate_and_mean_expression_by_hand():
    counts = np.array([[0, 3, 0], [1, 0, 0], [2, 1, 0], [0, 0, 5]], dtype=np.float32)
    adata = AnnData(np.zeros_like(counts))
    adata.layers[KEYS.COUNTS] = counts
    np.testing.assert_allclose(sivae.tl.detection_rate(adata), [0.5, 0.5, 0.25])
    tp10k = counts / counts.sum(1, keepdims=True) * 1e4
    np.testing.assert_allclose(sivae.tl.mean_expression(adata), np.log1p(tp10k).mean(0), rtol=1e-6)
    with pytest.raises(sivae.InputError, match="no 'raw'"):
        sivae.tl.detection_rate(adata, layer="raw")


def test_pca_centrality_is_one_for_a_gene_inside_the_top_components():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 1))
    X = np.hstack([2 * z, -z, rng.normal(size=(200, 3))]).astype(np.float32)
    r2 = sivae.tl.pca_centrality(AnnData(X), n_components=1, key_added=None)
    assert (r2.iloc[:2] > 0.99).all()  # the first PC is (almost) their shared factor
    assert (r2.iloc[2:] < 0.1).all()


def test_binned_ground_truth_finds_the_planted_hubs_and_is_reliable(planted):
    truth = sivae.tl.centrality_ground_truth_binned(planted, n_bins=8)
    hubs = planted.var_names[planted.var[KEYS.IS_HUB].to_numpy(bool)]
    assert set(truth.nlargest(3).index) == set(hubs)
    isolated = planted.var[KEYS.IS_ISOLATED].to_numpy(bool)
    assert abs(truth[isolated].mean()) < 0.01  # genes with no edges explain nothing beyond chance
    out = sivae.tl.split_half_reliability(planted, estimator=sivae.tl.centrality_ground_truth_binned,
                                          n_bins=8, between_seeds=False)
    assert out["split_half"] > 0.5 and out["ceiling"] == pytest.approx(sivae.tl.noise_ceiling(out["split_half"]))


def test_noise_ceiling_by_hand():
    assert sivae.tl.noise_ceiling(0.92) == pytest.approx(np.sqrt(1.84 / 1.92))
    assert sivae.tl.noise_ceiling(1.0) == 1.0 and sivae.tl.noise_ceiling(-0.2) == 0.0
    with pytest.raises(sivae.InputError, match="finite correlation"):
        sivae.tl.noise_ceiling(float("nan"))


def test_partial_spearman_by_hand():
    # ranks already: x = c + a, y = c + b; once c is regressed out, corr(a-ish, b-ish)
    c = np.array([1.0, 2, 3, 4, 5, 6])
    x = np.array([2.0, 1, 4, 3, 6, 5])
    y = np.array([1.0, 2, 4, 3, 5, 6])
    # hand: residuals of x on c: x - (c + 0) gives [1,-1,1,-1,1,-1] minus its fit on c
    design = np.column_stack([np.ones(6), c])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    expected = rx @ ry / np.linalg.norm(rx) / np.linalg.norm(ry)
    assert sivae.tl.partial_spearman(x, y, c) == pytest.approx(expected)
    assert sivae.tl.partial_spearman(c, c ** 2, c) != sivae.tl.partial_spearman(c, c ** 2, c)  # NaN: nothing left
    # a score that is the control plus noise has partial Spearman ~0 with a truth that is the control
    rng = np.random.default_rng(0)
    control = rng.normal(size=500)
    assert abs(sivae.tl.partial_spearman(control + rng.normal(size=500), control + rng.normal(size=500), control)) < 0.15
    shared = rng.normal(size=500)
    assert sivae.tl.partial_spearman(control + shared, control + shared + 0.3 * rng.normal(size=500), control) > 0.8


# -- stability of the hubs ------------------------------------------------------------------------
def test_hubs_with_stability_give_each_hub_its_rank_interval(tmp_path, capsys):
    adata = _scaled(np.random.default_rng(1).poisson(5.0, size=(100, 10)).astype(np.float32))
    model = sivae.SIVAE(adata, n_latent=2, encoder_hidden=(16, 8), c_red=6, batch_size=32, device="cpu")
    model.train(max_epochs=2, progress=False)
    table = sivae.tl.hubs(adata, n=4, stability=model, n_boot=20)
    assert list(table.columns) == [KEYS.CENTRALITY, "rank_low", "rank_high"] and len(table) == 4
    ranks = np.arange(1, 5)
    assert ((table["rank_low"].to_numpy() <= ranks) & (ranks <= table["rank_high"].to_numpy())).all()
    pd.testing.assert_frame_equal(sivae.tl.hubs(adata, n=4, stability=True), table)  # read back from var
    with pytest.raises(sivae.InputError, match="rank_low"):
        sivae.tl.hubs(AnnData(adata.X, var=adata.var[[KEYS.CENTRALITY]].copy()), stability=True)
    # the CLI: the fitted h5ad and the saved model
    adata.write_h5ad(tmp_path / "out.h5ad")
    model.save(tmp_path / "model")
    assert main(["hubs", str(tmp_path / "out.h5ad"), "--top", "3", "--stability", str(tmp_path / "model"),
                           "--n-boot", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t") == ["rank", "gene", KEYS.CENTRALITY, "rank_low", "rank_high"] and len(lines) == 4


def test_report_shows_the_pca_baseline_beside_the_hubs_only_without_a_ground_truth(planted):
    from sivae.report import build_report

    adata = planted.copy()
    sivae.SIVAE(adata, n_latent=3, encoder_hidden=(16, 8), c_red=6, batch_size=64, device="cpu").train(
        max_epochs=2, progress=False)
    page = build_report(adata, n_hubs=5)
    assert "PCA R^2 rank (top 3 PCs)" in page and "Spearman between the two rankings" in page
    adata.var[KEYS.GROUND_TRUTH_CENTRALITY] = np.linspace(0, 1, adata.n_vars)
    assert "PCA R^2 rank" not in build_report(adata, n_hubs=5)


def test_trained_centrality_is_the_correlation_of_each_gene_with_its_reconstruction():
    rng = np.random.default_rng(1)
    counts = rng.poisson(np.where((np.arange(150) % 3)[:, None] == 0, 9.0, 3.0), size=(150, 10)).astype(np.float32)
    adata = _scaled(counts)
    model = sivae.SIVAE(adata, n_latent=2, encoder_hidden=(16, 8), c_red=6, batch_size=32, device="cpu")
    model.train(max_epochs=2, progress=False)
    truth, pred = (np.concatenate(part) for part in zip(*((t.numpy(), p.numpy()) for t, p in model.reconstructions())))
    by_hand = [np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(truth.shape[1])]
    np.testing.assert_allclose(adata.var[KEYS.CENTRALITY], by_hand, atol=1e-5)
    residual = ((truth - pred) ** 2).mean(0) / truth.var(0)
    np.testing.assert_allclose(model.get_reconstruction_accuracy(formula="r2"), 1 - residual, atol=1e-4)
    with pytest.raises(sivae.InputError, match="formula must be one of"):
        model.get_reconstruction_accuracy(formula="pearson")
