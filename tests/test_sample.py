"""model.sample: cells drawn from the trained generative model, and siVAE-GRN on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anndata import AnnData

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.nn.module import CellVAE, ModuleConfig
from sivae.tl import edge_recovery, grn

from test_neighborhoods import trained_network


@pytest.fixture(scope="module")
def network():
    return trained_network()


def test_samples_reproduce_the_training_correlations(network):
    adata, model = network
    syn = model.sample(adata.n_obs, seed=1)
    assert syn.shape == adata.shape and list(syn.var_names) == list(adata.var_names)
    upper = np.triu_indices(adata.n_vars, k=1)
    truth, drawn = np.corrcoef(adata.X.T)[upper], np.corrcoef(syn.X.T)[upper]
    error = np.abs(truth - drawn)
    print(f"\nsample vs training gene-gene correlation: mean abs error {error.mean():.3f}, "
          f"max {error.max():.3f}, Pearson r of the two {np.corrcoef(truth, drawn)[0, 1]:.3f}")
    assert error.mean() < 0.05
    assert np.corrcoef(truth, drawn)[0, 1] > 0.9
    # hub-spoke pairs keep most of their correlation rho = 0.6 (this small, briefly trained
    # model attenuates it to about 0.39, as a VAE trained alike does; pairs without an edge stay
    # near rho^2 = 0.36 or 0)
    edges = adata.uns[KEYS.SIMULATED_NETWORK]["edges"]
    pos = adata.var_names.get_indexer(edges.ravel()).reshape(-1, 2)
    corr = np.corrcoef(syn.X.T)
    hub_spoke = corr[pos[:, 0], pos[:, 1]].mean()
    isolated = adata.var[KEYS.IS_ISOLATED].to_numpy()
    print(f"sampled hub-spoke correlation {hub_spoke:.3f} (training data: 0.6)")
    assert 0.35 < hub_spoke < 0.7
    assert np.abs(corr[np.ix_(isolated, ~isolated)]).mean() < 0.05


def test_sivae_grn_recovers_the_network_from_samples(network):
    adata, model = network
    syn = model.sample(adata.n_obs, seed=2)
    scores = edge_recovery(grn(syn, method="clr"), adata.uns[KEYS.SIMULATED_NETWORK]["edges"])
    print(f"\nsiVAE-GRN (CLR on samples): AUROC {scores['auroc']:.3f}")
    assert scores["auroc"] > 0.9


def test_the_seed_fixes_the_draw_without_touching_the_global_stream(network):
    _, model = network
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = model.sample(50, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.X, model.sample(50, seed=7).X)
    assert not np.array_equal(a.X, model.sample(50, seed=8).X)


def test_nb_generation_draws_counts_around_library_times_rho():
    torch.manual_seed(0)
    config = ModuleConfig(n_features=3, n_latent=2, encoder_hidden=(4,), decoder_hidden=(4,), likelihood="nb")
    module = CellVAE(config)
    with torch.no_grad():
        module.weight.zero_()  # rho = softmax(bias), whatever z is
        module.bias.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
        module.log_theta.fill_(np.log(10.0))
    library = torch.full((20_000,), 100.0)
    counts = module.generate(20_000, module.weight, library)
    assert torch.equal(counts, counts.round()) and (counts >= 0).all()
    torch.testing.assert_close(counts.mean(0), torch.tensor([50.0, 30.0, 20.0]), rtol=0.03, atol=0)
    # NB variance mu + mu^2 / theta: 50 + 250 = 300 for the first feature
    assert counts[:, 0].var().item() == pytest.approx(300.0, rel=0.1)
    with pytest.raises(ValueError, match="library sizes"):
        module.generate(5, module.weight)


def test_nb_model_samples_counts(one_thread):
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(2.0, 2.0, size=(300, 12))).astype(np.float32)
    counts[:, 0] += 1  # no constant genes
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    adata = AnnData(((logged - logged.mean(0)) / logged.std(0)).astype(np.float32))
    adata.layers[KEYS.COUNTS] = counts
    model = sivae.SIVAE(adata, n_latent=2, likelihood="nb", encoder_hidden=(8,), c_red=10, device="cpu")
    model.train(max_epochs=2, pretrain_epochs=1, progress=False)
    syn = model.sample(100, seed=0)
    X = syn.layers[KEYS.COUNTS]
    assert np.array_equal(X, np.round(X)) and (X >= 0).all()
    assert np.array_equal(syn.X, X)
    # totals are resampled from the training cells': same order of magnitude
    assert 0.3 < X.sum(1).mean() / counts.sum(1).mean() < 3
    library = np.full(100, 1000.0)
    assert model.sample(100, library=library).X.sum(1).mean() == pytest.approx(1000, rel=0.3)


def test_bad_input_gets_one_sentence(network):
    adata, model = network
    with pytest.raises(InputError, match="n_cells must be a positive integer"):
        model.sample(0)
    untrained = sivae.SIVAE(adata.copy(), n_latent=2, encoder_hidden=(8,), device="cpu")
    with pytest.raises(InputError, match="needs a trained model"):
        untrained.sample(10)
