"""Covariates in sivae.nn.module: shapes, no change without them, exact step-2 sums, a planted batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sivae.nn.module
from sivae.nn.module import Batch, CellStatistics, CellVAE, ModuleConfig, SIVAEModule
from sivae.nn.mlp import kl_standard_normal

N_CELLS, N_FEATURES, C_RED, K = 10, 12, 5, 2
TINY = ModuleConfig(n_features=N_FEATURES, n_latent=K, encoder_hidden=(8,), decoder_hidden=(8, 6),
                    n_feature_input=C_RED)
CATS, N_CONT = (3, 2), 1  # a batch of 3 categories, a donor of 2, one continuous covariate
WITH_COVS = ModuleConfig(**{**TINY.__dict__, "n_cats_per_covariate": CATS, "n_continuous_covariates": N_CONT})
D = sum(CATS) + N_CONT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sivae.nn.module, "reparameterize", lambda mean, log_var: mean)


def _data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_CELLS, N_FEATURES, generator=g)
    feature_x = torch.randn(N_FEATURES, C_RED, generator=g)
    cat_covs = torch.stack([torch.arange(N_CELLS) % 3, torch.arange(N_CELLS) // 5], dim=1)  # (B, 2)
    cont_covs = torch.randn(N_CELLS, N_CONT, generator=g)
    return x, feature_x, cat_covs, cont_covs


def _batch(x, feature_x, cat_covs=None, cont_covs=None, idx=None, n_cells=100) -> Batch:
    idx = torch.arange(x.shape[1]) if idx is None else idx
    return Batch(x=x, target=x[:, idx], feature_idx=idx, feature_x=feature_x[idx], n_cells=n_cells,
                 n_features=x.shape[1], cat_covs=cat_covs, cont_covs=cont_covs)


def _randomise_effects(module: SIVAEModule | CellVAE, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 2 and p.shape[1] == N_FEATURES:  # the betas (n_j, F) and (M, F)
                p.copy_(torch.randn(p.shape, generator=g))


# -- shapes and backward compatibility ------------------------------------------------------------
def test_without_covariates_the_parameters_and_their_initial_values_are_unchanged() -> None:
    torch.manual_seed(0)
    plain = SIVAEModule(TINY)
    torch.manual_seed(0)
    explicit = SIVAEModule(ModuleConfig(**{**TINY.__dict__, "n_cats_per_covariate": (),
                                           "n_continuous_covariates": 0, "encode_covariates": True}))
    assert plain.cell.covariates is None
    a, b = plain.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and not any("covariate" in key for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    effects = plain.covariate_effects()
    assert effects.categorical == [] and effects.continuous.shape == (0, N_FEATURES)


@pytest.mark.parametrize("encode_covariates", [False, True])
def test_covariates_reach_every_cell_wise_decoder_layer_and_no_feature_wise_layer(encode_covariates: bool) -> None:
    module = SIVAEModule(ModuleConfig(**{**WITH_COVS.__dict__, "encode_covariates": encode_covariates}))
    linears = lambda net: [m for m in net.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    # decoder: K -> 8 -> 6, every layer reads a_c (D columns more)
    assert [m.in_features for m in linears(module.cell.decoder)] == [K + D, 8 + D]
    encoder_in = [m.in_features for m in linears(module.cell.encoder.body)]
    assert encoder_in == ([N_FEATURES + D] if encode_covariates else [N_FEATURES])
    # the feature-wise networks read the feature's input and latent only: one point per gene
    assert [m.in_features for m in linears(module.feature_encoder.body)] == [C_RED]
    assert [m.in_features for m in linears(module.feature_decoder)] == [K, 8]
    effects = module.covariate_effects()
    assert [tuple(e.shape) for e in effects.categorical] == [(3, N_FEATURES), (2, N_FEATURES)]
    assert effects.continuous.shape == (N_CONT, N_FEATURES)


def test_an_encoder_without_hidden_layers_reads_the_covariates_in_its_heads() -> None:
    config = ModuleConfig(**{**WITH_COVS.__dict__, "encoder_hidden": (), "encode_covariates": True})
    module = CellVAE(config)
    assert module.encoder.mean.in_features == N_FEATURES + D
    x, _, cat_covs, cont_covs = _data()
    assert module.cell_embedding(x, cat_covs, cont_covs).shape == (N_CELLS, K)
    with pytest.raises(ValueError, match="2 categorical covariates"):
        module.cell_embedding(x)
    with pytest.raises(ValueError, match="reads 6 covariate columns"):  # the network itself checks
        module.encoder(x)


def test_losses_equal_a_model_without_covariates_when_their_weights_are_zero(no_noise: None) -> None:
    # the covariate path adds exactly nothing once its weights are zero: the rest of the model is
    # the covariate-free one (whose losses are those of the release before covariates)
    x, feature_x, cat_covs, cont_covs = _data()
    torch.manual_seed(0)
    plain = SIVAEModule(TINY)
    with_covs = SIVAEModule(ModuleConfig(**{**WITH_COVS.__dict__, "encode_covariates": True}))
    state = with_covs.state_dict()
    for key, value in plain.state_dict().items():
        if state[key].shape != value.shape:  # a Linear reading a_c: the covariate columns zero
            value = torch.cat([value, torch.zeros(value.shape[0], D)], dim=1)
        state[key] = value
    with_covs.load_state_dict(state)
    for phase in SIVAEModule.phases:
        a = plain.loss(_batch(x, feature_x), phase).as_floats()
        b = with_covs.loss(_batch(x, feature_x, cat_covs, cont_covs), phase).as_floats()
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), phase


def test_missing_or_misshapen_covariates_are_refused() -> None:
    module = SIVAEModule(WITH_COVS)
    x, feature_x, cat_covs, cont_covs = _data()
    with pytest.raises(ValueError, match="2 categorical covariates"):
        module.loss(_batch(x, feature_x, None, cont_covs), "joint")
    with pytest.raises(ValueError, match="1 continuous covariates"):
        module.loss(_batch(x, feature_x, cat_covs, cont_covs.repeat(1, 2)), "joint")
    with pytest.raises(ValueError, match="each of the 4 cells"):
        module.generate(4, module.cell.weight, None, cat_covs, cont_covs)


def test_covariate_effects_shift_the_mean_in_the_likelihood_and_the_interpretability_term(no_noise: None) -> None:
    # a linear model: mean = z_1 . v_1 + b_f + beta_cf, beta_cf = B_batch[s] + B_donor[s'] + u B_cont
    module = SIVAEModule(ModuleConfig(**{**WITH_COVS.__dict__, "linear": True}))
    _randomise_effects(module)
    x, feature_x, cat_covs, cont_covs = _data()
    idx = torch.arange(N_FEATURES)
    effects = module.covariate_effects()
    for e in effects.categorical:  # centred over the categories: b_f holds the average level
        torch.testing.assert_close(e.sum(0), torch.zeros(N_FEATURES), atol=1e-5, rtol=0)
    beta = (effects.categorical[0][cat_covs[:, 0]] + effects.categorical[1][cat_covs[:, 1]]
            + cont_covs @ effects.continuous)
    z_1 = module.cell_embedding(x, cat_covs, cont_covs)
    v_1 = module.feature_embedding(feature_x)
    mean = module.predict(x, module.feature_decoded(feature_x, idx), idx, cat_covs, cont_covs)
    torch.testing.assert_close(mean, z_1 @ v_1.T + module.cell.bias + beta)
    # the non-linear model's interpretability term reads X - beta
    module = SIVAEModule(WITH_COVS)
    _randomise_effects(module)
    losses = module.loss(_batch(x, feature_x, cat_covs, cont_covs), "joint")
    residual = x - module.cell_embedding(x) @ module.feature_embedding(feature_x).T - beta
    expected = WITH_COVS.gamma * 0.5 * residual.pow(2).sum(1).mean()
    torch.testing.assert_close(losses.interpretability, expected)


def test_nb_effects_enter_the_log_rate_before_the_softmax(no_noise: None) -> None:
    module = CellVAE(ModuleConfig(**{**WITH_COVS.__dict__, "likelihood": "nb"}))
    _randomise_effects(module)
    x, _, cat_covs, cont_covs = _data()
    idx = torch.arange(N_FEATURES)
    design = module.design(cat_covs, cont_covs)
    z_L = module.decoder(module.cell_embedding(x), design)
    logits = z_L @ module.weight.T + module.bias + module.covariates.shift(design, idx)
    rho = module.predict(x, module.weight, idx, cat_covs, cont_covs)
    torch.testing.assert_close(rho, torch.softmax(logits, -1))
    # reported effects: centred over the features too, as the softmax ignores a shared shift
    for e in module.covariate_effects().categorical:
        torch.testing.assert_close(e.sum(1), torch.zeros(e.shape[0]), atol=1e-5, rtol=0)


def test_generate_draws_cells_for_the_covariates_given() -> None:
    torch.manual_seed(0)
    module = SIVAEModule(WITH_COVS)
    with torch.no_grad():
        module.cell.covariates.categorical[0][2] += 50.0  # batch 2 shifts every feature by far
    n = 200
    cat_covs = torch.zeros(n, 2, dtype=torch.long)
    cont_covs = torch.zeros(n, N_CONT)
    v_L = module.cell.weight
    in_0 = module.generate(n, v_L, None, cat_covs, cont_covs)
    in_2 = module.generate(n, v_L, None, cat_covs + torch.tensor([2, 0]), cont_covs)
    assert in_0.shape == (n, N_FEATURES)
    shift = (in_2.mean(0) - in_0.mean(0)).mean().item()  # B centred: 50 - 50/3 in batch 2 vs 0
    assert shift == pytest.approx(50.0, rel=0.1)


# -- step 2 from sums over the cells --------------------------------------------------------------
def test_feature_step_from_cell_sums_with_covariates_is_the_mean_over_cells(no_noise: None) -> None:
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(**{**WITH_COVS.__dict__, "encode_covariates": True}))
    _randomise_effects(module)
    x, feature_x, cat_covs, cont_covs = _data()
    idx = torch.arange(4, 9)
    scale = N_FEATURES / len(idx)
    # written directly, cell by cell, as the joint objective's terms at step 1's posterior means
    mean_v, log_var_v = module.feature_encoder(feature_x[idx])
    v_L = module.feature_decoder(mean_v)
    design = module.cell.design(cat_covs, cont_covs)
    mean_z = module.cell.encode(x, design)[0].detach()
    z_L = module.cell.decoder(mean_z, design).detach()
    beta = module.cell.covariates.shift(design, idx).detach()
    regression = z_L @ v_L.T - z_L @ module.cell.weight[idx].detach().T
    direct = scale * 0.5 * regression.pow(2).sum(1).mean()
    residual = x[:, idx] - mean_z @ mean_v.T - beta
    direct = direct + WITH_COVS.gamma * scale * 0.5 * residual.pow(2).sum(1).mean()
    direct = direct + scale * kl_standard_normal(mean_v, log_var_v).sum() / 100
    # the sums of two halves, added; and minibatches of cells (each with its own sums), averaged
    halves = [slice(0, 5), slice(5, None)]
    sums = sum((module.cell_statistics(x[h], cat_covs[h], cont_covs[h]) for h in halves[1:]),
               module.cell_statistics(x[halves[0]], cat_covs[halves[0]], cont_covs[halves[0]]))
    assert isinstance(sums, CellStatistics) and sums.gram_a.shape == (D, D)
    batch = _batch(x, feature_x, idx=idx)
    batch.x, batch.target, batch.statistics = None, None, sums
    from_sums = module.loss(batch, "feature").total
    minibatches = torch.stack([module.loss(_batch(x[h], feature_x, cat_covs[h], cont_covs[h], idx), "feature").total
                               for h in halves]).mean()
    assert from_sums.item() == pytest.approx(direct.item(), rel=1e-5)
    assert minibatches.item() == pytest.approx(direct.item(), rel=1e-5)
    params = module.phase_parameters("feature")
    for a, b in zip(torch.autograd.grad(direct, params), torch.autograd.grad(from_sums, params)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_betas_train_in_steps_one_and_three_only() -> None:
    module = SIVAEModule(WITH_COVS)
    betas = {id(p) for p in module.cell.covariates.parameters()}
    assert betas <= {id(p) for p in module.phase_parameters("cell")}
    assert not betas & {id(p) for p in module.phase_parameters("feature")}
    assert betas <= {id(p) for p in module.phase_parameters("joint")}


# -- a planted batch effect, trained directly on the module ---------------------------------------
SIM_CELLS, SIM_FEATURES = 240, 24


def _planted_batches(seed: int = 0) -> tuple[torch.Tensor, ...]:
    # 3 cell types on a 2-D continuum of biology, 2 batches each shifting every gene by its own
    # amount (3x the biology's loading scale): without covariates the batch is what varies most
    g = torch.Generator().manual_seed(seed)
    types = torch.arange(SIM_CELLS) % 3
    batch = (torch.arange(SIM_CELLS) // 3) % 2
    centres = torch.tensor([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    biology = centres[types] + torch.randn(SIM_CELLS, 2, generator=g)
    effect = 3.0 * torch.randn(2, SIM_FEATURES, generator=g)
    raw = biology @ torch.randn(2, SIM_FEATURES, generator=g) + effect[batch]
    raw = raw + 0.5 * torch.randn(SIM_CELLS, SIM_FEATURES, generator=g)
    scale = raw.std(0)
    x = (raw - raw.mean(0)) / scale
    return x, types, batch, effect / scale  # the planted effect in the scaled units the model sees


def _fit(x: torch.Tensor, batch: torch.Tensor | None, steps: tuple[int, ...] = (200, 100, 200)) -> SIVAEModule:
    # the three steps with Adam on minibatches of 100 cells; step 2 on the cells' sums
    n_cells, n_features = x.shape
    feature_x = x.T.contiguous()  # C_red = all cells
    torch.manual_seed(0)
    config = ModuleConfig(n_features=n_features, n_latent=2, encoder_hidden=(32,), decoder_hidden=(32,),
                          n_feature_input=n_cells, n_cats_per_covariate=() if batch is None else (2,))
    module = SIVAEModule(config)
    covs = lambda rows: None if batch is None else batch[rows, None]  # noqa: E731
    every = torch.arange(n_features)
    for phase, n_steps in zip(module.phases, steps):
        optimizer = torch.optim.Adam(module.phase_parameters(phase), lr=1e-2)
        statistics = module.cell_statistics(x, covs(slice(None))) if phase == "feature" else None
        for _ in range(n_steps):
            rows = torch.randperm(n_cells)[:100]
            step = Batch(x=x[rows], target=x[rows], feature_idx=every, feature_x=feature_x, n_cells=n_cells,
                         n_features=n_features, cat_covs=covs(rows), statistics=statistics)
            optimizer.zero_grad()
            module.loss(step, phase).total.backward()
            optimizer.step()
    return module


def _other_label_share(z: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    # mean share of each cell's k nearest neighbours in z that carry another label
    distances = torch.cdist(z, z).fill_diagonal_(float("inf"))
    neighbours = distances.topk(k, largest=False).indices
    return (labels[neighbours] != labels[:, None]).float().mean().item()


def test_with_the_batch_as_covariate_batches_mix_and_its_gene_effects_are_recovered() -> None:
    x, types, batch, planted = _planted_batches()
    plain = _fit(x, None)
    corrected = _fit(x, batch)
    z_plain, z_corrected = plain.cell_embedding(x), corrected.cell_embedding(x, batch[:, None])
    mixing_plain, mixing = _other_label_share(z_plain, batch), _other_label_share(z_corrected, batch)
    # two balanced batches mixed perfectly: 0.5
    assert mixing > 0.35 and mixing > mixing_plain + 0.15, (mixing, mixing_plain)
    assert _other_label_share(z_corrected, types) < 0.1  # the cell types stay apart
    recovered = corrected.covariate_effects().categorical[0]  # (2, F), centred over the batches
    truth = planted - planted.mean(0)
    assert np.corrcoef(recovered.flatten().numpy(), truth.flatten().numpy())[0, 1] > 0.8
