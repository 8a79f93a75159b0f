"""sivae.nn.module and sivae.nn: likelihoods, unbiased minibatch losses, phases, the linear and NB variants."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.distributions import NegativeBinomial, Normal, kl_divergence

import sivae.nn.module
from sivae.data.loaders import CellMatrix
from sivae.nn.module import Batch, CellVAE, ModuleConfig, SIVAEModule
from sivae.nn.likelihoods import (gaussian_nll, negative_binomial_expected_log1p, negative_binomial_nll,
                                  negative_binomial_nll_per_cell)
from sivae.nn.mlp import kl_standard_normal

N_CELLS, N_FEATURES, C_RED, K = 10, 12, 5, 2
N_TRAIN = 100  # training cells in the "full data set" the batch is drawn from
TINY = ModuleConfig(n_features=N_FEATURES, n_latent=K, encoder_hidden=(8,), decoder_hidden=(8,),
                    n_feature_input=C_RED)
BLOCKS = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]  # a disjoint partition of the features
TERMS = ("recon", "kl_cells", "kl_features", "interpretability")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    # z = E[z] and v = E[v]: the loss becomes a deterministic function of the batch
    monkeypatch.setattr(sivae.nn.module, "reparameterize", lambda mean, log_var: mean)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_CELLS, N_FEATURES, generator=g)  # (B, F) scaled values
    feature_x = torch.randn(N_FEATURES, C_RED, generator=g)  # (F, C_red)
    return x, feature_x


def _batch(x: torch.Tensor, feature_x: torch.Tensor | None, block: np.ndarray | None = None,
           n_cells: int = N_TRAIN) -> Batch:
    idx = torch.arange(x.shape[1]) if block is None else torch.as_tensor(block)
    return Batch(x=x, target=x[:, idx], feature_idx=idx,
                 feature_x=None if feature_x is None else feature_x[idx],
                 n_cells=n_cells, n_features=x.shape[1])


def _nb_batch(counts: torch.Tensor) -> Batch:
    x = torch.log1p(counts)
    return Batch(x=x, target=counts, feature_idx=torch.arange(counts.shape[1]), feature_x=None,
                 n_cells=N_TRAIN, n_features=counts.shape[1], library=counts.sum(1))


# -- likelihoods and KL match torch.distributions -------------------------------------------------
def test_negative_binomial_nll_matches_torch() -> None:
    x, mu, theta = torch.meshgrid(
        torch.tensor([0.0, 1.0, 3.0, 17.0, 250.0, 1e4], dtype=torch.float64),
        torch.tensor([0.05, 1.0, 7.5, 300.0, 2e4], dtype=torch.float64),
        torch.tensor([0.1, 1.0, 4.0, 100.0, 1e3], dtype=torch.float64),
        indexing="ij",
    )
    # NB with mean mu and inverse dispersion theta: total_count = theta, p = mu / (mu + theta)
    expected = -NegativeBinomial(total_count=theta, logits=mu.log() - theta.log()).log_prob(x)
    got = negative_binomial_nll(x, mu, theta)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    # the module computes in float32: still close on the same grid, large counts included
    got32 = negative_binomial_nll(x.float(), mu.float(), theta.float()).double()
    torch.testing.assert_close(got32, expected, rtol=1e-4, atol=5e-2)


def _sparse_counts(n_cells: int, n_features: int, seed: int) -> torch.Tensor:
    # mostly zeros, as scRNA-seq counts are; an empty cell and a huge count
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.rand(n_cells, n_features, generator=g) * 30, generator=g) + 1
    counts *= torch.rand(n_cells, n_features, generator=g) < 0.1
    counts[0], counts[1, 0] = 0.0, 1e4
    return counts


def test_expected_log1p_under_the_negative_binomial_is_the_exact_sum() -> None:
    # sparse, middling and high means, over- and under-dispersed; exact: the pmf summed far out
    mu = torch.tensor([[0.05, 0.5, 3.0, 40.0, 400.0]], dtype=torch.float64)
    theta = torch.tensor([0.3, 1.0, 5.0, 2.0, 20.0], dtype=torch.float64)
    scale = torch.tensor([[2.5]], dtype=torch.float64)
    k = torch.arange(0, 5000, dtype=torch.float64)[:, None]
    dist = NegativeBinomial(total_count=theta, probs=mu[0] / (mu[0] + theta))  # mean mu, as torch spells it
    exact = (dist.log_prob(k).exp() * torch.log1p(scale[0] * k)).sum(0)
    got = negative_binomial_expected_log1p(mu, theta, scale)[0]
    assert torch.allclose(got, exact, rtol=0.02, atol=1e-4)
    assert torch.allclose(negative_binomial_expected_log1p(mu, theta, scale, n_terms=5000)[0], exact, rtol=1e-6)
    # the log of the mean overshoots, most for the sparse gene (Jensen)
    plain = torch.log1p(scale[0] * mu[0])
    assert (plain > got).all() and plain[0] / got[0] > 1.5


def test_negative_binomial_nll_per_cell_equals_the_elementwise_sum() -> None:
    # float32, as training runs; theta up to 1e3, where theta log theta alone dwarfs each entry's NLL
    g = torch.Generator().manual_seed(4)
    x = _sparse_counts(16, 300, seed=4)
    mu = (2000 * torch.softmax(2 * torch.randn(16, 300, generator=g), -1)).requires_grad_()
    theta = (10 ** (4.3 * torch.rand(300, generator=g) - 1.3)).requires_grad_()
    expected = negative_binomial_nll(x, mu, theta).sum(1)
    grads = torch.autograd.grad(expected.sum(), (mu, theta))
    stored_zero = torch.tensor([[0], [5]])  # a sparse matrix may store zeros: they add nothing
    for nonzero in (None, torch.cat([x.nonzero().T, stored_zero], 1)):
        got = negative_binomial_nll_per_cell(x, mu, theta, nonzero)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
        for a, b in zip(torch.autograd.grad(got.sum(), (mu, theta)), grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gaussian_nll_matches_torch() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    mean = torch.randn(50, 7, generator=g, dtype=torch.float64)
    var = torch.rand(50, 7, generator=g, dtype=torch.float64) * 5 + 1e-3
    expected = -Normal(mean, var.sqrt()).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, var), expected)
    # broadcasting as the module uses it: one variance per cell (B, 1), or per feature (F,)
    torch.testing.assert_close(gaussian_nll(x, mean, var[:, :1]), -Normal(mean, var[:, :1].sqrt()).log_prob(x))
    torch.testing.assert_close(gaussian_nll(x, mean, var[0]), -Normal(mean, var[0].sqrt()).log_prob(x))


def test_kl_standard_normal_matches_torch() -> None:
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(30, 4, generator=g, dtype=torch.float64) * 2
    log_var = torch.randn(30, 4, generator=g, dtype=torch.float64)
    q, p = Normal(mean, (0.5 * log_var).exp()), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl_standard_normal(mean, log_var), kl_divergence(q, p).sum(-1))


# -- minibatch estimates are unbiased -------------------------------------------------------------
@pytest.mark.parametrize("variance", ["cell", "feature"])
def test_joint_loss_over_feature_blocks_averages_to_full_loss(no_noise: None, variance: str) -> None:
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(**{**TINY.__dict__, "variance": variance}))
    x, feature_x = _data()
    full = module.loss(_batch(x, feature_x), "joint")
    blocks = [module.loss(_batch(x, feature_x, b), "joint") for b in BLOCKS]
    assert full.interpretability.item() > 0 and full.kl_features.item() > 0
    for term in TERMS:
        mean_over_blocks = torch.stack([getattr(b, term) for b in blocks]).mean()
        torch.testing.assert_close(mean_over_blocks, getattr(full, term), rtol=1e-5, atol=1e-6,
                                   msg=f"{term} is not unbiased over feature blocks")


def test_cell_phase_recon_over_feature_blocks_averages_to_full_loss(no_noise: None) -> None:
    torch.manual_seed(0)
    for module in (CellVAE(TINY), SIVAEModule(TINY)):
        x, feature_x = _data()
        full = module.loss(_batch(x, feature_x), "cell")
        blocks = [module.loss(_batch(x, feature_x, b), "cell") for b in BLOCKS]
        torch.testing.assert_close(torch.stack([b.recon for b in blocks]).mean(), full.recon)
        for b in blocks:
            torch.testing.assert_close(b.kl_cells, full.kl_cells)


def test_kl_features_is_the_full_kl_divided_by_n_cells(no_noise: None) -> None:
    torch.manual_seed(0)
    module = SIVAEModule(TINY)
    x, feature_x = _data()
    mean_v, log_var_v = module.feature_encoder(feature_x)
    kl_all_features = kl_standard_normal(mean_v, log_var_v).sum()
    for n_cells in (N_TRAIN, 4 * N_TRAIN):
        losses = module.loss(_batch(x, feature_x, n_cells=n_cells), "joint")
        torch.testing.assert_close(losses.kl_features * n_cells, kl_all_features)


# -- the linear variant (eq. 19-20) ---------------------------------------------------------------
def test_linear_variant_has_identity_decoders_and_no_interpretability_term(no_noise: None) -> None:
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(**{**TINY.__dict__, "linear": True}))
    assert isinstance(module.cell.decoder, torch.nn.Identity)
    assert isinstance(module.feature_decoder, torch.nn.Identity)
    with torch.no_grad():
        module.cell.bias.normal_()
    x, feature_x = _data()
    losses = module.loss(_batch(x, feature_x), "joint")
    assert losses.interpretability.item() == 0.0
    # the reconstruction mean is v_{f,1} . z_{c,1} + b_f, nothing in between
    z_1 = module.cell_embedding(x)  # (B, K)
    v_1 = module.feature_embedding(feature_x)  # (F, K)
    idx = torch.arange(N_FEATURES)
    mean = module.predict(x, module.feature_decoded(feature_x, idx), idx)
    torch.testing.assert_close(mean, z_1 @ v_1.T + module.cell.bias)
    var = torch.nn.functional.softplus(module.cell.variance_head(z_1)) + sivae.nn.module._MIN_VARIANCE
    recon = gaussian_nll(x, z_1 @ v_1.T + module.cell.bias, var).sum(1).mean()
    torch.testing.assert_close(losses.recon, recon)


# -- what each training step optimises ------------------------------------------------------------
def test_phase_parameters_follow_the_three_step_procedure() -> None:
    module = SIVAEModule(TINY)
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    cell = ids(module.phase_parameters("cell"))
    feature = ids(module.phase_parameters("feature"))
    joint = ids(module.phase_parameters("joint"))
    feature_side = ids([*module.feature_encoder.parameters(), *module.feature_decoder.parameters()])
    assert id(module.cell.weight) in cell and cell == ids(module.cell.parameters())
    assert feature == feature_side
    assert id(module.cell.weight) not in joint
    assert joint == ids(module.parameters()) - {id(module.cell.weight)}


def test_feature_phase_regresses_cell_weight_without_moving_it() -> None:
    torch.manual_seed(0)
    module = SIVAEModule(TINY)
    x, feature_x = _data()
    losses = module.loss(_batch(x, feature_x), "feature")
    assert losses.recon.item() > 0 and losses.kl_cells.item() == 0.0
    losses.total.backward()
    # step 1's weights and cell-wise networks are the fixed target of step 2
    assert all(p.grad is None for p in module.cell.parameters())
    assert all(p.grad is not None for p in module.phase_parameters("feature"))


def test_feature_phase_learns_what_the_free_weights_predict(no_noise: None) -> None:
    # a few Adam steps of step 2 bring z_L . v_L close to z_L . v_free for these cells
    torch.manual_seed(0)
    module = SIVAEModule(TINY)
    x, feature_x = _data()
    batch = _batch(x, feature_x)
    params = module.phase_parameters("feature")
    optimizer = torch.optim.Adam(params, lr=1e-2)
    first = module.loss(batch, "feature").recon.item()
    for _ in range(200):
        optimizer.zero_grad()
        module.loss(batch, "feature").total.backward()
        optimizer.step()
    assert module.loss(batch, "feature").recon.item() < 0.1 * first


@pytest.mark.parametrize("gamma", [0.0, 0.05])
def test_feature_step_from_cell_sums_is_the_mean_over_cells(no_noise: None, gamma: float) -> None:
    # step 2's loss written directly, cell by cell (as before CellStatistics), against the sums of
    # two halves of the cells added up, on a block of features: the same value and gradients
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(**{**TINY.__dict__, "gamma": gamma}))
    x, feature_x = _data()
    block = BLOCKS[1]
    idx = torch.as_tensor(block)
    scale = N_FEATURES / len(block)
    mean_v, log_var_v = module.feature_encoder(feature_x[idx])
    v_L = module.feature_decoder(mean_v)
    mean_z = module.cell.encoder(x)[0].detach()
    z_L = module.cell.decoder(mean_z).detach()
    regression = z_L @ v_L.T - z_L @ module.cell.weight[idx].detach().T
    direct = scale * 0.5 * regression.pow(2).sum(1).mean()
    direct = direct + gamma * scale * 0.5 * (x[:, idx] - mean_z @ mean_v.T).pow(2).sum(1).mean()
    direct = direct + scale * kl_standard_normal(mean_v, log_var_v).sum() / N_TRAIN
    sums = module.cell_statistics(x[:4]) + module.cell_statistics(x[4:])
    batch = _batch(x, feature_x, block)
    batch.x, batch.target, batch.statistics = None, None, sums
    from_sums = module.loss(batch, "feature").total
    assert from_sums.item() == pytest.approx(direct.item(), rel=1e-5)
    params = module.phase_parameters("feature")
    expected = torch.autograd.grad(direct, params)
    got = torch.autograd.grad(from_sums, params)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


# -- the negative binomial variant (eq. 14-18) ----------------------------------------------------
def test_nb_loss_is_finite_and_predictions_are_proportions() -> None:
    torch.manual_seed(0)
    module = CellVAE(ModuleConfig(**{**TINY.__dict__, "likelihood": "nb"}))
    g = torch.Generator().manual_seed(3)
    counts = torch.poisson(torch.rand(N_CELLS, N_FEATURES, generator=g) * 20, generator=g)
    counts[0] = 0.0  # an empty cell must not break the loss
    counts[1, 0] = 1e4  # nor a huge count
    losses = module.loss(_nb_batch(counts))
    assert all(torch.isfinite(getattr(losses, t)) for t in TERMS)
    losses.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    idx = torch.arange(N_FEATURES)
    rho = module.predict(torch.log1p(counts), module.weight, idx)  # eq. 15: softmax over features
    assert rho.shape == (N_CELLS, N_FEATURES) and (rho >= 0).all()
    torch.testing.assert_close(rho.sum(1), torch.ones(N_CELLS))


def test_nb_loss_equals_the_elementwise_formula(no_noise: None) -> None:
    # the module runs the lgamma terms at nonzero counts alone, at positions the loader reads from
    # the sparse counts or found from the batch: the loss is the elementwise formula's either way
    torch.manual_seed(0)
    module = CellVAE(ModuleConfig(**{**TINY.__dict__, "n_features": 40, "likelihood": "nb"}))
    with torch.no_grad():
        module.log_theta.normal_(0, 2)
    counts = _sparse_counts(N_CELLS, 40, seed=5)
    batch = _nb_batch(counts)
    z_L = module.decoder(module.encoder(batch.x)[0])
    logits = module.observation_mean(z_L, module.weight, batch.feature_idx)
    mu = batch.library[:, None] * torch.softmax(logits, -1)
    expected = negative_binomial_nll(counts, mu, module.log_theta.exp()).sum(1).mean()
    torch.testing.assert_close(module.loss(batch).recon, expected, rtol=1e-5, atol=0)
    batch.target_nonzero = CellMatrix(sp.csr_matrix(counts.numpy())).nonzero(np.arange(N_CELLS))
    torch.testing.assert_close(module.loss(batch).recon, expected, rtol=1e-5, atol=0)


# -- sampling from the generative model -----------------------------------------------------------
@pytest.mark.parametrize("variance", ["cell", "feature"])
def test_generate_returns_finite_cells_for_gaussian(variance: str) -> None:
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(**{**TINY.__dict__, "variance": variance}))
    _, feature_x = _data()
    idx = torch.arange(N_FEATURES)
    samples = module.generate(25, module.feature_decoded(feature_x, idx))
    assert samples.shape == (25, N_FEATURES) and torch.isfinite(samples).all()
    assert samples.std(0).min() > 0  # draws, not a constant


def test_generate_nb_draws_counts_and_needs_library_sizes() -> None:
    module = CellVAE(ModuleConfig(**{**TINY.__dict__, "likelihood": "nb"}))
    with pytest.raises(ValueError, match="library sizes"):
        module.generate(5, module.weight)
    counts = module.generate(5, module.weight, torch.full((5,), 1000.0))
    assert counts.shape == (5, module.weight.shape[0])
    assert torch.all(counts >= 0) and torch.equal(counts, counts.round())
