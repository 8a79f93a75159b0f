"""sivae.tl.attribute and summarize_attributions: analytic cases on tiny torch modules, the summary
against scikit-learn's PCA, a trained siVAE's loadings against DeepLIFT, bad input refused."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from torch import nn

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.cli import main
from sivae.tl.attribution import (
    METHODS,
    CellwiseAttributions,
    attribute,
    attribute_module,
    attribution_key,
)
from sivae.tl.attribution_summary import summarize_attributions

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]  # captum's notes on hooks


def _net(n_in: int = 3, n_out: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, n_out))


# -- analytic cases -------------------------------------------------------------------------------
def test_linear_decoder_saliency_is_the_weight_matrix_and_the_rest_are_grad_x_input():
    torch.manual_seed(0)
    linear = nn.Linear(4, 6)
    z = torch.randn(9, 4)
    W = linear.weight.detach()  # (6, 4)
    saliency = attribute_module(linear, z, method="saliency")
    assert torch.allclose(saliency, W.expand(9, 6, 4), atol=1e-6)
    gxi = attribute_module(linear, z, method="grad_x_input")
    assert torch.allclose(gxi, W[None] * z[:, None, :], atol=1e-6)
    for method in ("deeplift", "integrated_gradients", "shapley"):
        other = attribute_module(linear, z, method=method, n_samples=3, n_steps=4)
        assert torch.allclose(other, gxi, atol=1e-5), method


@pytest.mark.parametrize("method", ["saliency", "grad_x_input"])
def test_forward_and_reverse_modes_agree_on_a_nonlinear_network(method):
    net = _net()
    x = torch.randn(11, 3)
    forward = attribute_module(net, x, method=method, mode="forward")
    reverse = attribute_module(net, x, method=method, mode="reverse")
    assert forward.shape == (11, 5, 3)
    assert torch.allclose(forward, reverse, atol=1e-5)
    assert forward.abs().max() > 0.05  # not trivially zero


def test_deeplift_and_integrated_gradients_sum_to_the_output_difference():
    net = _net()
    x, base = torch.randn(8, 3), torch.zeros(1, 3)
    delta = (net(x) - net(base)).detach()  # (8, 5)
    deeplift = attribute_module(net, x, method="deeplift")
    assert torch.allclose(deeplift.sum(-1), delta, atol=1e-5)  # summation-to-delta is exact
    ig = attribute_module(net, x, method="integrated_gradients", n_steps=64)
    assert torch.allclose(ig.sum(-1), delta, atol=2e-3)  # completeness, up to quadrature
    # a ReLU network is not linear: deeplift differs from grad x input somewhere
    assert not torch.allclose(deeplift, attribute_module(net, x, method="grad_x_input"), atol=1e-3)


class _ThreeInputs(nn.Module):
    # two outputs with interactions: exact Shapley values differ from any single-order credit
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([a * b + torch.relu(c - a), a * b * c + 2 * b], -1)


def _exact_shapley(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # average marginal contribution over all 3! orders, baseline 0
    phi = torch.zeros(x.shape[0], 2, 3)
    orders = list(itertools.permutations(range(3)))
    for order in orders:
        current = torch.zeros_like(x)
        previous = fn(current)
        for i in order:
            current = current.clone()
            current[:, i] = x[:, i]
            value = fn(current)
            phi[:, :, i] += value - previous
            previous = value
    return phi / len(orders)


def test_shapley_sampling_converges_to_exact_shapley_values():
    fn = _ThreeInputs()
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0], [2.0, -1.0, 0.5]])
    exact = _exact_shapley(fn, x)
    errors = {n: (attribute_module(fn, x, method="shapley", n_samples=n, seed=1) - exact).abs().max()
              for n in (2, 400)}
    print(f"\nShapley sampling max error: {float(errors[2]):.3f} at 2 permutations, "
          f"{float(errors[400]):.4f} at 400")
    assert errors[400] < 0.05 * exact.abs().max()
    assert errors[400] < errors[2]
    # efficiency holds for every sample: values sum to f(x) - f(0)
    sampled = attribute_module(fn, x, method="shapley", n_samples=2)
    assert torch.allclose(sampled.sum(-1), fn(x) - fn(torch.zeros_like(x)), atol=1e-5)


def test_unknown_method_and_forward_mode_without_one_are_refused():
    with pytest.raises(InputError, match="method must be one of"):
        attribute_module(_net(), torch.randn(2, 3), method="lime")
    with pytest.raises(InputError, match="deeplift has no forward mode"):
        attribute_module(_net(), torch.randn(2, 3), method="deeplift", mode="forward")


# -- the summary ----------------------------------------------------------------------------------
class _Planted(CellwiseAttributions):
    # S[c, :, d] = t_cd * u_d + noise: the first principal component of each dimension is u_d
    def __init__(self, n_cells: int, n_features: int, k: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.u = rng.normal(size=(n_features, k))
        self.u /= np.linalg.norm(self.u, axis=0)
        t = rng.normal(size=(n_cells, 1, k)) * 3 + 1
        noise = 0.1 * rng.normal(size=(n_cells, n_features, k))
        self.values = torch.from_numpy(t * self.u[None] + noise + rng.normal(size=(1, n_features, k)))
        adata = AnnData(np.zeros((n_cells, n_features), np.float32))
        super().__init__(adata, np.arange(n_cells), np.asarray(adata.var_names), k, 16, "planted")

    def _chunk(self, rows: np.ndarray) -> torch.Tensor:
        return self.values[rows]


def _pc1(S: np.ndarray) -> np.ndarray:
    return np.stack([PCA(1).fit(S[:, :, d]).components_[0] for d in range(S.shape[2])], 1)


@pytest.mark.parametrize("n_features, rank", [(20, 64), (400, 32)])
def test_streamed_summary_matches_pca_of_the_dense_attributions(n_features, rank):
    attr = _Planted(200, n_features, 3)
    U = summarize_attributions(attr, sketch_rank=rank)
    cosine = np.abs((U * _pc1(attr.to_numpy())).sum(0))
    assert U.shape == (n_features, 3)
    assert cosine.min() > (0.99999 if n_features <= rank else 0.999), cosine
    assert np.abs((U * attr.u).sum(0)).min() > 0.99  # and it is the planted direction


class _Factored(CellwiseAttributions):
    # S_c = V A_c, as on a decoder with a linear read-out; A has a decaying spectrum over H
    def __init__(self, n_cells: int, n_features: int = 60, width: int = 40, k: int = 3) -> None:
        rng = np.random.default_rng(0)
        self.readout = torch.from_numpy(rng.normal(size=(n_features, width))).float()
        scale = np.linspace(3, 0.1, width)[None, :, None]
        self.A = torch.from_numpy(rng.normal(size=(n_cells, width, k)) * scale + 1.0).float()
        adata = AnnData(np.zeros((n_cells, n_features), np.float32))
        super().__init__(adata, np.arange(n_cells), np.asarray(adata.var_names), k, 7, "factored")

    def _factors(self, rows: np.ndarray) -> torch.Tensor:
        return self.A[rows]

    def _chunk(self, rows: np.ndarray) -> torch.Tensor:
        return torch.einsum("fh,bhk->bfk", self.readout, self.A[rows])


@pytest.mark.parametrize("n_cells", [20, 90])  # fewer cells than H (kept), more (moments)
def test_factored_summary_is_exactly_pca_and_svd_of_the_dense_attributions(n_cells):
    attr = _Factored(n_cells)
    S = attr.to_numpy()
    centred = np.abs((summarize_attributions(attr) * _pc1(S)).sum(0))
    first_sv = np.stack([np.linalg.svd(S[:, :, d])[2][0] for d in range(3)], 1)
    uncentred = np.abs((summarize_attributions(attr, center=False) * first_sv).sum(0))
    assert centred.min() > 0.99999 and uncentred.min() > 0.99999
    # the mean (+1 on every A) makes centring matter: the two summaries differ
    assert np.abs((_pc1(S) * first_sv).sum(0)).min() < 0.99


def test_summary_signs_follow_the_reference_and_are_written_when_asked():
    attr = _Planted(60, 20, 2)
    plain = summarize_attributions(attr)
    flipped_ref = -plain * np.array([1.0, -1.0])
    aligned = summarize_attributions(attr, reference=flipped_ref, key_added="planted")
    np.testing.assert_allclose(aligned, plain * np.array([-1.0, 1.0]), atol=1e-6)
    np.testing.assert_array_equal(attr.adata.varm["planted"], aligned)
    with pytest.raises(InputError, match="reference must be a finite 20 x 2"):
        summarize_attributions(attr, reference=np.ones((3, 2)))


def test_uncentred_summary_keeps_an_attribution_that_is_the_same_in_every_cell():
    class Constant(_Planted):
        def _chunk(self, rows):
            return torch.from_numpy(np.repeat(self.u[None], len(rows), 0))

    attr = Constant(30, 10, 2)
    U = summarize_attributions(attr, center=False)
    np.testing.assert_allclose(np.abs((U * attr.u).sum(0)), 1.0, atol=1e-6)


# -- a trained model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def network():
    # the simulated network (5 hub-and-spoke communities) at K=8, as in test_end_to_end; about
    # 20 s on one core (smaller networks left dimensions the decoder barely uses)
    adata = sivae.datasets.simulated_network(n_cells=3000, seed=0)
    model = sivae.SIVAE(adata, n_latent=8, encoder_hidden=(256, 128), seed=0, device="cpu")
    return model.train(max_epochs=30, progress=False)


@pytest.mark.slow
def test_sivae_loadings_agree_with_deeplift_on_its_own_decoder(network):
    adata = network.adata
    attr = attribute(network, adata, method="deeplift", n_cells=150)  # more cells than H = 128
    assert attr.shape == (150, adata.n_vars, 8)
    U = summarize_attributions(attr, reference=KEYS.LOADINGS)
    table = sivae.tl.agreement(adata, {"siVAE": KEYS.LOADINGS, "DeepLIFT": U})
    median = float(table["median"].iloc[0])
    # against a summary of random attributions the same test finds nothing
    rng = np.random.default_rng(0)
    chance = np.median([abs(spearmanr(adata.varm[KEYS.LOADINGS][:, d], rng.normal(size=adata.n_vars))[0])
                        for d in range(8)])
    per_dim = table.iloc[0][[f"dim {d + 1}" for d in range(8)]].to_numpy(dtype=float)
    spread = adata.obsm[KEYS.CELL_EMBEDDING].std(0)
    print(f"\nsimulated network K=8: median |Spearman| siVAE loadings vs DeepLIFT {median:.3f} "
          f"(random: {chance:.3f}); per dimension {np.round(per_dim, 2)}, "
          f"cell-embedding s.d. {np.round(spread, 2)} (a dimension the decoder barely uses agrees less)")
    assert median > 0.5


@pytest.mark.slow
def test_decoder_summary_is_pca_of_the_dense_attributions_for_every_method(network):
    adata = network.adata
    for method in METHODS:
        attr = attribute(network, adata, method=method, n_cells=16, n_steps=8, n_samples=4)
        S = attr.to_numpy()
        assert S.shape == (16, adata.n_vars, 8) and np.isfinite(S).all()
        cosine = np.abs((summarize_attributions(attr) * _pc1(S)).sum(0))
        assert cosine.min() > 0.9999, (method, cosine)
    # the encoder target: K outputs per cell, the summary by the sketch
    enc = attribute(network, adata, method="grad_x_input", target="encoder", mode="forward", n_cells=16)
    rev = attribute(network, adata, method="grad_x_input", target="encoder", n_cells=16)
    np.testing.assert_allclose(enc.to_numpy(), rev.to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_attribute_refuses_bad_input(network):
    adata = network.adata
    with pytest.raises(InputError, match="more than the 3000 cells"):
        attribute(network, adata, method="saliency", n_cells=3001)
    with pytest.raises(InputError, match="shapley has no forward mode"):
        attribute(network, adata, method="shapley", mode="forward")
    with pytest.raises(InputError, match="target must be one of"):
        attribute(network, adata, method="saliency", target="latent")
    with pytest.raises(InputError, match="expected a trained"):
        attribute("model", adata, method="saliency")
    untrained = sivae.SIVAE(adata[:200].copy(), n_latent=2, encoder_hidden=(8,), c_red=10, device="cpu")
    with pytest.raises(InputError, match="untrained"):
        attribute(untrained, untrained.adata, method="saliency")


def _counts_adata(n_cells: int = 120, n_genes: int = 15) -> AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(4.0, size=(n_cells, n_genes)).astype(np.float32)
    X = np.log1p(counts)
    adata = AnnData(((X - X.mean(0)) / X.std(0)).astype(np.float32),
                    var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.layers[KEYS.COUNTS] = counts
    return adata


def test_ldvae_decoder_is_refused_with_what_its_attribution_is_and_its_encoder_works():
    model = sivae.LDVAE(_counts_adata(), n_latent=2, encoder_hidden=(8,), device="cpu")
    model.train(max_epochs=1, progress=False)
    with pytest.raises(InputError, match="no hidden decoder layers.*saliency is the loading matrix") as info:
        attribute(model, model.adata, method="saliency")
    assert "\n" not in str(info.value)
    attr = attribute(model, model.adata, method="saliency", target="encoder", n_cells=10)
    assert attr.to_numpy().shape == (10, 15, 2)
    # DeepLIFT on the encoder's posterior mean: features' contributions sum to mean(x) - mean(0)
    deeplift = attribute(model, model.adata, method="deeplift", target="encoder", n_cells=10)
    x = torch.from_numpy(model.adata.X[deeplift.cells])
    with torch.no_grad():
        delta = model.module.encoder(x)[0] - model.module.encoder(torch.zeros_like(x))[0]
    np.testing.assert_allclose(deeplift.to_numpy().sum(1), delta.numpy(), atol=1e-5)
    assert attribution_key("saliency", "encoder") == "sivae_attribution_saliency_encoder"


@pytest.mark.slow
def test_cli_attribute_writes_the_summary(network, tmp_path):
    network.save(tmp_path / "model")
    network.adata.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / "attr.h5ad"
    args = ["attribute", str(tmp_path / "in.h5ad"), "--model-dir", str(tmp_path / "model")]
    code = main([*args, "--method", "grad_x_input", "--n-cells", "100", "-o", str(out)])
    assert code == 0
    written = sivae.read(out)
    U = written.varm["sivae_attribution_grad_x_input"]
    assert U.shape == (written.n_vars, 8)
    assert math.isclose(float(np.linalg.norm(U[:, 0])), 1.0, rel_tol=1e-4)
    assert written.uns["sivae_attribution_grad_x_input"]["n_cells"] == 100
    assert main([*args, "--method", "deeplift", "--mode", "forward", "-o", str(tmp_path / "x.h5ad")]) == 2
