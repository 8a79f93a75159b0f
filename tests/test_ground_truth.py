"""Ground-truth centrality (mean PVE of all other genes from one gene) and the grouped networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anndata import AnnData

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import centrality_ground_truth
from sivae.tl._grouped import GroupedMLP, pve, train_grouped


def test_grouped_networks_are_independent_mlps():
    torch.manual_seed(0)
    model = GroupedMLP(3, 2, (4, 5), 1)
    x = torch.randn(3, 7, 2)
    out = model(x)
    # group 1 computed alone, as a plain MLP with its slice of the weights
    h = x[1]
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = h @ w[1] + b[1]
        h = torch.relu(h) if i < 2 else h
    torch.testing.assert_close(out[1], h)
    # a loss on group 0 leaves the other groups' gradients at zero
    out[0].sum().backward()
    assert model.weights[0].grad[1:].abs().sum() == 0


def test_pve_is_one_for_a_perfect_prediction_and_zero_for_a_constant():
    y = torch.randn(100, 2)
    torch.testing.assert_close(pve(y, y), torch.ones(2))
    torch.testing.assert_close(pve(y, torch.zeros_like(y) + 3.0), torch.zeros(2), atol=1e-6, rtol=0)
    # a target constant on these cells has no PVE (not a huge negative number)
    y[:, 1] = 0.0
    assert torch.isnan(pve(y, torch.randn(100, 2))[1])


def test_genes_constant_on_held_out_cells_are_left_out(one_thread):
    # a sparse gene, nonzero in 3 of 300 cells, is likely constant on the held-out cells; it must
    # not turn its neighbours' mean PVE into -1e10
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    X[:, 5] = 0.0
    X[:3, 5] = 1.0
    truth = centrality_ground_truth(AnnData(X), epochs=40, seed=0)
    assert np.isfinite(truth).all() and (truth.abs() < 0.3).all()  # independent genes: about 0


@pytest.mark.slow
def test_ground_truth_ranks_the_planted_hubs_first(one_thread):
    adata = sivae.datasets.simulated_network(n_cells=1500, seed=0)
    # 16 components hold the five communities' programmes; the default 64 costs ~3x here
    truth = centrality_ground_truth(adata, n_components=16, seed=0)
    top5 = truth.nlargest(5).index
    hub_pve = truth[adata.var[KEYS.IS_HUB]]
    spoke_pve = truth[~adata.var[KEYS.IS_HUB] & ~adata.var[KEYS.IS_ISOLATED]]
    print(f"\nground truth: hubs {hub_pve.mean():.3f} (expected ~49 * 0.36 / 299 = 0.059), "
          f"spokes {spoke_pve.mean():.3f}, isolated {truth[adata.var[KEYS.IS_ISOLATED]].mean():.3f}")
    assert adata.var.loc[top5, KEYS.IS_HUB].all()
    assert hub_pve.min() > 0.03  # a hub explains rho^2 = 0.36 of each of its 49 spokes
    assert abs(truth[adata.var[KEYS.IS_ISOLATED]].mean()) < 0.01  # an isolated gene explains nothing
    assert np.array_equal(adata.var[KEYS.GROUND_TRUTH_CENTRALITY], truth.to_numpy())


def test_ground_truth_without_compression_finds_a_nonlinear_hub(one_thread):
    # gene 0 drives genes 1-4 through x^2 (no linear correlation at all); 5-7 are noise
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=1500)
    X = np.column_stack([x0] + [x0**2 + 0.5 * rng.normal(size=1500) for _ in range(4)]
                        + [rng.normal(size=1500) for _ in range(3)])
    adata = AnnData(X.astype(np.float32))
    truth = centrality_ground_truth(adata, n_components=None, epochs=30, seed=0)
    assert truth.idxmax() == "0"
    assert truth.iloc[0] > 0.3  # 4 of 7 others at ~0.67 PVE each


def test_bad_input_gets_one_sentence():
    with pytest.raises(InputError, match="NaN or infinite"):
        centrality_ground_truth(AnnData(np.full((20, 3), np.nan, dtype=np.float32)))
    with pytest.raises(InputError, match="at least 2 genes and 10 cells"):
        centrality_ground_truth(AnnData(np.ones((5, 3), dtype=np.float32)))
    with pytest.raises(InputError, match="adata.layers has no 'counts'"):
        centrality_ground_truth(AnnData(np.ones((20, 3), dtype=np.float32)), layer="counts")


def test_a_subset_of_query_genes_is_scored_alone(one_thread):
    # gene 0 drives genes 1-3; asking for genes 0 and 4 only trains those two networks
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=800)
    X = np.column_stack([x0] + [x0 + 0.5 * rng.normal(size=800) for _ in range(3)] + [rng.normal(size=800)])
    adata = AnnData(X.astype(np.float32))
    truth = centrality_ground_truth(adata, genes=["4", "0"], n_components=None, epochs=20, seed=0)
    assert truth.index.equals(adata.var_names)
    assert np.isnan(truth[["1", "2", "3"]]).all() and np.isfinite(truth[["0", "4"]]).all()
    assert truth["0"] > 0.4 > 0.05 > truth["4"]
    with pytest.raises(InputError, match="genes must name genes of adata.var_names"):
        centrality_ground_truth(adata, genes=["0", "TP53"])


def test_early_stopping_keeps_each_networks_best_epoch(one_thread):
    torch.manual_seed(0)
    model = GroupedMLP(2, 1, (8,), 1)
    x = torch.randn(2, 200, 1)
    y = torch.cat([x[:1] * 2.0, torch.randn(1, 200, 1)])  # network 0 learns; network 1 fits noise
    val_x = torch.randn(2, 100, 1)
    validation = (val_x, torch.cat([val_x[:1] * 2.0, torch.randn(1, 100, 1)]))
    run = train_grouped(model, 200, lambda rows: (x[:, rows], y[:, rows]), epochs=300, batch_size=50,
                        learning_rate=1e-2, seed=0, validation=validation, patience=5)
    assert run < 300  # stopped early: the noise network cannot improve for long
    with torch.no_grad():
        val_loss = (model(validation[0]) - validation[1]).pow(2).mean((1, 2))
    assert val_loss[0] < 0.05 and val_loss[1] < 1.3  # the learner learned; the noise one kept an early state
