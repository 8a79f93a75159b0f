"""Batches and covariates from AnnData to the module and back (sivae.models.covariates, issue 27).

Small simulated data with a planted batch effect: three groups of cells (the biology) and three
batches, each batch shifting every gene by its own amount. A model told the batch mixes the
batches in its embedding and keeps the groups apart; the batch's effects it reports are the
planted shifts.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import NearestNeighbors

import sivae
from sivae._errors import InputError
from sivae.cli import main
from sivae.data.backed import read_backed
from sivae.models.covariates import CovariateCoding

pytestmark = pytest.mark.usefixtures("one_thread")

N_CELLS, N_FEATURES = 600, 60
SMALL = dict(n_latent=4, encoder_hidden=(32, 16), c_red=20, seed=0, device="cpu")
EPOCHS = 60
MIXING = dict(batch_size=64, learning_rate=3e-3)  # enough steps for the encoder to drop the batch


def _planted(seed: int = 0, n_cells: int = N_CELLS) -> tuple[ad.AnnData, np.ndarray]:
    """z-scored cells of 3 groups x 3 batches; the batches' per-gene shifts in the scaled units."""
    rng = np.random.default_rng(seed)
    group, batch = rng.integers(0, 3, n_cells), rng.integers(0, 3, n_cells)
    centres = rng.normal(0.0, 1.5, (3, N_FEATURES))
    shifts = rng.normal(0.0, 1.5, (3, N_FEATURES))
    X = centres[group] + shifts[batch] + rng.normal(0.0, 1.0, (n_cells, N_FEATURES))
    sd = X.std(0)
    adata = ad.AnnData(((X - X.mean(0)) / sd).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(N_FEATURES)]
    adata.obs["group"] = pd.Categorical([f"g{g}" for g in group])
    adata.obs["sample"] = pd.Categorical([f"s{b}" for b in batch])
    adata.obs["pct_mito"] = rng.uniform(0.0, 10.0, n_cells)
    scaled = shifts / sd
    return adata, scaled - scaled.mean(0)  # centred over the batches, as the model reports them


def _knn_accuracy(embedding: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Share of cells whose k nearest neighbours (itself excluded) vote for its own label."""
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding)
    votes = labels[idx[:, 1:]]
    majority = np.array([pd.Series(row).value_counts().index[0] for row in votes])
    return float(np.mean(majority == labels))


@pytest.fixture(scope="module")
def planted() -> tuple[ad.AnnData, np.ndarray]:
    return _planted()


@pytest.fixture(scope="module")
def with_batch(planted) -> sivae.SIVAE:
    adata, _ = planted
    model = sivae.SIVAE(adata.copy(), batch_key="sample", continuous_covariate_keys=["pct_mito"], **SMALL, **MIXING)
    return model.train(EPOCHS, progress=False)


# -- the planted batch effect --------------------------------------------------------------------
def test_batch_key_mixes_batches_keeps_groups_and_recovers_the_shifts(planted, with_batch) -> None:
    adata, shifts = planted
    without = sivae.SIVAE(adata.copy(), **SMALL, **MIXING).train(EPOCHS, progress=False)
    batch, group = np.asarray(adata.obs["sample"]), np.asarray(adata.obs["group"])
    z_with, z_without = with_batch.adata.obsm["X_sivae"], without.adata.obsm["X_sivae"]
    # 15-NN batch prediction: near chance (1/3) with the batch given, far above it without
    assert _knn_accuracy(z_without, batch) > 0.9
    assert _knn_accuracy(z_with, batch) < 0.55  # 0.44 here; about 0.4 for batches drawn at random
    assert _knn_accuracy(z_with, group) > 0.95
    effects = with_batch.get_batch_effects()
    assert list(effects.columns) == [("sample", "s0"), ("sample", "s1"), ("sample", "s2"), ("pct_mito", "per_sd")]
    assert list(effects.index) == list(adata.var_names)
    r = np.corrcoef(effects["sample"].to_numpy().T.ravel(), shifts.ravel())[0, 1]
    assert r > 0.85  # 0.89 here
    # pct_mito is noise: its effect is small beside the batches'
    assert effects[("pct_mito", "per_sd")].abs().mean() < 0.3 * effects["sample"].abs().to_numpy().mean()


def test_vae_takes_the_same_arguments(planted) -> None:
    adata, shifts = planted
    vae = sivae.VAE(adata.copy(), batch_key="sample", **SMALL, **MIXING).train(EPOCHS, progress=False)
    r = np.corrcoef(vae.get_batch_effects()["sample"].to_numpy().T.ravel(), shifts.ravel())[0, 1]
    assert r > 0.85


def test_ldvae_recovers_planted_log_factors(planted) -> None:
    adata, _ = planted
    # LDVAE on counts whose batches scale each gene by a planted factor: its log recovered ("nb"
    # effects are log-rates, centred over the batches and over the genes)
    rng = np.random.default_rng(1)
    batch = np.asarray(adata.obs["sample"].cat.codes)
    log_factor = rng.normal(0.0, 0.5, (3, N_FEATURES))
    rate = rng.gamma(2.0, 1.0, (3, N_FEATURES))[np.asarray(adata.obs["group"].cat.codes)] * np.exp(log_factor)[batch]
    counts = adata.copy()
    counts.layers["counts"] = rng.poisson(rate * rng.uniform(0.5, 2.0, (adata.n_obs, 1))).astype(np.float32)
    ldvae = sivae.LDVAE(counts, batch_key="sample", n_latent=2, seed=0, device="cpu", **MIXING).train(
        20, progress=False)
    effects = ldvae.get_batch_effects()["sample"].to_numpy().T  # (3, F)
    np.testing.assert_allclose(effects.mean(1), 0.0, atol=1e-5)
    planted = log_factor - log_factor.mean(0)
    planted -= planted.mean(1, keepdims=True)
    assert np.corrcoef(effects.ravel(), planted.ravel())[0, 1] > 0.9


def test_sample_draws_the_chosen_batch(with_batch, planted) -> None:
    _, shifts = planted
    first, second = with_batch.sample(3000, batch="s0", seed=1), with_batch.sample(3000, batch="s2", seed=1)
    assert (first.obs["sample"] == "s0").all() and (second.obs["sample"] == "s2").all()
    difference = np.asarray(second.X).mean(0) - np.asarray(first.X).mean(0)
    assert np.corrcoef(difference, shifts[2] - shifts[0])[0, 1] > 0.9
    mixed = with_batch.sample(300, seed=1, covariates={"pct_mito": 5.0})
    assert set(mixed.obs["sample"]) == {"s0", "s1", "s2"}  # drawn from the training cells
    np.testing.assert_allclose(mixed.obs["pct_mito"], 5.0, rtol=1e-5)
    with pytest.raises(InputError, match="mapping new batches is not supported yet"):
        with_batch.sample(5, batch="s9")
    with pytest.raises(InputError, match="not covariates of this model"):
        with_batch.sample(5, covariates={"donor": "d1"})


def test_decoder_attributions_hold_each_cell_at_its_own_covariates(with_batch, planted) -> None:
    adata, _ = planted
    attributions = sivae.tl.attribute(with_batch, with_batch.adata, method="saliency", n_cells=8)
    saliency = attributions.to_numpy()  # (8, F, K)
    cell, rows = with_batch.module.cell, attributions.cells
    covariates = with_batch.cell_covariates().rows(rows)
    z = with_batch.module.cell_embedding(torch.from_numpy(with_batch.adata.X[rows]), **covariates)
    design = cell.design(covariates["cat_covs"], covariates["cont_covs"])
    v_L = with_batch.decoded_features()
    for i in range(len(rows)):
        jacobian = torch.autograd.functional.jacobian(lambda zz: cell.decoder(zz, design[i : i + 1]) @ v_L.T,
                                                      z[i : i + 1])[0, :, 0, :]
        np.testing.assert_allclose(saliency[i], jacobian.numpy(), atol=1e-5)
    ig = sivae.tl.attribute(with_batch, with_batch.adata, method="integrated_gradients", n_cells=4, n_steps=64)
    rows = ig.cells
    covariates = with_batch.cell_covariates().rows(rows)
    z = with_batch.module.cell_embedding(torch.from_numpy(with_batch.adata.X[rows]), **covariates)
    design = cell.design(covariates["cat_covs"], covariates["cont_covs"])
    mean = cell.decoder(z, design) @ v_L.T - cell.decoder(torch.zeros_like(z), design) @ v_L.T
    # completeness: the attributions sum to the change from the baseline, the batch held fixed
    np.testing.assert_allclose(ig.to_numpy().sum(-1), mean.detach().numpy(), atol=5e-3)


# -- files: save, load, new cells, old folders, backed, resume -------------------------------------
def _counts(seed: int = 0, n_cells: int = 400, n_features: int = 80) -> ad.AnnData:
    """Raw counts of 2 groups x 3 batches (each batch scales every gene), with covariate columns."""
    rng = np.random.default_rng(seed)
    group, batch = rng.integers(0, 2, n_cells), rng.integers(0, 3, n_cells)
    rate = rng.gamma(2.0, 1.0, (2, n_features))[group] * rng.lognormal(0.0, 0.5, (3, n_features))[batch]
    counts = rng.poisson(rate * rng.uniform(0.5, 2.0, (n_cells, 1))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(n_features)]
    adata.obs["sample"] = pd.Categorical([f"s{b}" for b in batch])
    adata.obs["donor"] = np.array(["d1", "d2"])[rng.integers(0, 2, n_cells)]
    adata.obs["pct_mito"] = rng.uniform(0.0, 10.0, n_cells)
    return adata


COVARIATES = dict(batch_key="sample", categorical_covariate_keys=["donor"], continuous_covariate_keys=["pct_mito"])


def test_saved_model_embeds_new_raw_cells_as_the_fit_did(tmp_path: Path) -> None:
    raw = _counts()
    adata = raw.copy()
    sivae.pp.preprocess(adata, n_top_genes=50, batch_key="sample")
    assert adata.uns["sivae_preprocess"]["batch_key"] == "sample"
    model = sivae.SIVAE(adata, encode_covariates=True, **COVARIATES, **SMALL).train(3, progress=False)
    model.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["covariates"]
    assert saved["categorical"][0] == {"key": "sample", "categories": ["s0", "s1", "s2"]}
    loaded = sivae.load_model(tmp_path / "model")
    new = raw[raw.obs["sample"] != "s1"].copy()  # cells of known batches, raw counts, all genes
    z = loaded.get_cell_embedding(new, preprocess=True)
    expected = adata.obsm["X_sivae"][np.asarray(raw.obs["sample"] != "s1")]
    np.testing.assert_allclose(z, expected, atol=1e-4)
    # the codes follow the saved order, not the new cells' own: s0 and s2 only, reversed categories
    new.obs["sample"] = pd.Categorical(new.obs["sample"].astype(str), categories=["s2", "s0"])
    np.testing.assert_allclose(loaded.get_cell_embedding(new, preprocess=True), expected, atol=1e-4)
    pd.testing.assert_frame_equal(loaded.get_batch_effects(), model.get_batch_effects())
    # without its data, the loaded model draws cells only for covariates given in full
    drawn = loaded.sample(10, covariates={"sample": "s2", "donor": "d1", "pct_mito": 2.5})
    assert list(drawn.obs.columns) == ["sample", "donor", "pct_mito"] and (drawn.obs["donor"] == "d1").all()
    with pytest.raises(InputError, match="needs the training data"):
        loaded.sample(10, batch="s2")
    unseen = raw[:20].copy()
    unseen.obs["sample"] = "s9"
    with pytest.raises(InputError, match="mapping new batches is not supported yet"):
        loaded.get_cell_embedding(unseen, preprocess=True)


def test_a_folder_without_covariate_fields_still_loads(tmp_path: Path, planted) -> None:
    # config.json as sivae 0.1.0 wrote it: none of the covariate settings, no covariate record
    adata, _ = planted
    model = sivae.SIVAE(adata.copy(), **SMALL).train(2, progress=False)
    model.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    meta = json.loads(path.read_text())
    for name in ("batch_key", "categorical_covariate_keys", "continuous_covariate_keys", "encode_covariates"):
        del meta["config"][name]
    del meta["covariates"]
    path.write_text(json.dumps(meta))
    loaded = sivae.SIVAE.load(tmp_path / "model")
    assert loaded.covariate_coding is None and loaded.get_batch_effects().shape == (N_FEATURES, 0)
    np.testing.assert_array_equal(loaded.get_cell_embedding(adata), model.adata.obsm["X_sivae"])


def test_backed_and_in_memory_runs_agree(tmp_path: Path) -> None:
    raw = _counts()
    raw.write_h5ad(tmp_path / "counts.h5ad")
    memory = ad.read_h5ad(tmp_path / "counts.h5ad")
    # seurat: a backed file computes seurat_v3 without batches only (it warns and uses seurat)
    sivae.pp.preprocess(memory, n_top_genes=50, batch_key="sample", flavor="seurat")
    backed = read_backed(tmp_path / "counts.h5ad")
    sivae.pp.preprocess(backed, n_top_genes=50, batch_key="sample", flavor="seurat", progress=False)
    assert list(backed.var_names) == list(memory.var_names)  # the same genes chosen across batches
    plain = raw.copy()
    sivae.pp.preprocess(plain, n_top_genes=50, flavor="seurat")
    assert set(plain.var_names) != set(memory.var_names)  # and not those chosen over all cells
    runs = [sivae.SIVAE(a, **COVARIATES, **SMALL).train(3, progress=False) for a in (memory, backed)]
    np.testing.assert_allclose(runs[1].adata.obsm["X_sivae"], runs[0].adata.obsm["X_sivae"], atol=1e-3)
    np.testing.assert_allclose(runs[1].get_batch_effects(), runs[0].get_batch_effects(), atol=1e-3)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, planted, monkeypatch: pytest.MonkeyPatch) -> None:
    adata, _ = planted
    options = dict(pretraining="paper", pretrain_epochs=2, checkpoint_every=1, progress=False)
    whole = sivae.SIVAE(adata.copy(), **COVARIATES_PLANTED, **SMALL).train(3, checkpoint_dir=tmp_path / "a", **options)
    original, calls = sivae.train.trainer.Trainer._train_epoch, [0]

    def interrupted(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # during the feature-wise step, as a Ctrl-C would
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sivae.train.trainer.Trainer, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sivae.SIVAE(adata.copy(), **COVARIATES_PLANTED, **SMALL).train(3, checkpoint_dir=tmp_path / "b", **options)
    monkeypatch.setattr(sivae.train.trainer.Trainer, "_train_epoch", original)
    resumed = sivae.SIVAE(adata.copy(), **COVARIATES_PLANTED, **SMALL).train(
        3, checkpoint_dir=tmp_path / "b", resume=True, **options)
    np.testing.assert_array_equal(resumed.adata.obsm["X_sivae"], whole.adata.obsm["X_sivae"])
    pd.testing.assert_frame_equal(resumed.get_batch_effects(), whole.get_batch_effects())
    relabelled = adata.copy()  # the same cells, other batches: not the data the checkpoint trained on
    relabelled.obs["sample"] = relabelled.obs["sample"].to_numpy()[::-1]
    with pytest.raises(InputError, match="other covariates"):
        sivae.SIVAE(relabelled, **COVARIATES_PLANTED, **SMALL).train(3, checkpoint_dir=tmp_path / "b", resume=True,
                                                                     **options)


COVARIATES_PLANTED = dict(batch_key="sample", continuous_covariate_keys=["pct_mito"])


# -- bad input: one sentence each, nothing written -------------------------------------------------
def _broken(change: str) -> tuple[ad.AnnData, dict]:
    adata, _ = _planted(n_cells=120)
    options = dict(COVARIATES_PLANTED)
    if change == "missing key":
        options["batch_key"] = "lane"
    elif change == "one category":
        adata.obs["sample"] = "s0"
    elif change == "NaN category":
        adata.obs["sample"] = adata.obs["sample"].astype(object)
        adata.obs.iloc[3, adata.obs.columns.get_loc("sample")] = np.nan
    elif change == "NaN value":
        adata.obs.iloc[5, adata.obs.columns.get_loc("pct_mito")] = np.nan
    elif change == "not numeric":
        options["continuous_covariate_keys"] = ["group"]
    elif change == "constant value":
        adata.obs["pct_mito"] = 1.0
    elif change == "key twice":
        options["categorical_covariate_keys"] = ["sample"]
    elif change == "key twice in one list":
        options = {"categorical_covariate_keys": ["group", "group"]}
    elif change == "not a list":
        options["continuous_covariate_keys"] = 3
    return adata, options


@pytest.mark.parametrize("change, match", [
    ("missing key", r"adata.obs has no column 'lane'"),
    ("one category", r"has one category \('s0'\)"),
    ("NaN category", r"missing \(NaN\) for 1 cells"),
    ("NaN value", r"missing \(NaN\) for 1 cells"),
    ("not numeric", r"adata.obs\['group'\] is not numeric"),
    ("constant value", r"constant on the training cells"),
    ("key twice", r"given as covariates more than once"),
    ("key twice in one list", r"given as covariates more than once"),
    ("not a list", r"continuous_covariate_keys must be a list of strings"),
])
def test_bad_covariates_are_refused_in_one_sentence(change: str, match: str) -> None:
    adata, options = _broken(change)
    before = set(adata.obsm), set(adata.obs.columns)
    with pytest.raises(InputError, match=match) as err:
        sivae.SIVAE(adata, **options, **SMALL)
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert (set(adata.obsm), set(adata.obs.columns)) == before  # nothing written


def test_new_cells_with_bad_covariates_are_refused(with_batch, planted) -> None:
    adata, _ = planted
    new = adata[:30].copy()
    new.obs["sample"] = np.where(np.arange(30) < 3, "s7", "s0")
    with pytest.raises(InputError, match=r"categories the model was not trained on \(s7\), and mapping new batches"):
        with_batch.get_reconstruction_accuracy(new)
    new = adata[:30].copy()
    del new.obs["pct_mito"]
    with pytest.raises(InputError, match="adata.obs has no column 'pct_mito'"):
        sivae.tl.attribute(with_batch, new, method="saliency").to_numpy()
    # the encoder does not read the batch (no encode_covariates), but new cells must still say theirs
    with pytest.raises(InputError, match="adata.obs has no column 'pct_mito'"):
        with_batch.get_cell_embedding(new)
    new = adata[:30].copy()
    new.obs["sample"] = "s7"
    with pytest.raises(InputError, match="mapping new batches is not supported yet"):
        with_batch.get_cell_embedding(new)
    np.testing.assert_array_equal(with_batch.get_cell_embedding(adata[:30].copy()), with_batch.adata.obsm["X_sivae"][:30])


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "B", "10", "2", ""])),
                       min_size=2, max_size=40),
       categorical=st.booleans(), numbers=st.lists(st.floats(-1e6, 1e6), min_size=40, max_size=40),
       seed=st.integers(0, 2**16))
def test_coding_of_obs_columns_round_trips(values, categorical, numbers, seed) -> None:
    # any column of labels: the codes name each cell's own label, whatever order or subset of the
    # cells is coded later; a continuous column standardises to mean 0 and sd 1 on the training cells
    n = len(values)
    obs = pd.DataFrame({"batch": pd.Series(values, dtype="category" if categorical else object),
                        "level": numbers[:n]}, index=[f"c{i}" for i in range(n)])
    labels = obs["batch"].astype(str).to_numpy()
    train = np.arange(n)
    if len(set(labels)) < 2 or np.std(numbers[:n]) == 0 or len(set(map(str, values))) != len(set(values)):
        with pytest.raises(InputError):
            CovariateCoding.fit(obs, ("batch",), ("level",), train)
        return
    coding = CovariateCoding.fit(obs, ("batch",), ("level",), train)
    assert sorted(coding.categorical[0][1]) == sorted(set(labels))
    covariates = coding.encode(obs)
    assert [coding.categorical[0][1][c] for c in covariates.cat[:, 0]] == list(labels)
    assert abs(covariates.cont[:, 0].mean()) < 1e-3 and covariates.cont[:, 0].std() == pytest.approx(1.0, abs=1e-3)
    order = np.random.default_rng(seed).permutation(n)[: max(1, n // 2)]
    again = coding.encode(obs.iloc[order])
    np.testing.assert_array_equal(again.cat, covariates.cat[order])
    np.testing.assert_array_equal(again.cont, covariates.cont[order])


def test_coding_round_trips_and_refuses_a_broken_record() -> None:
    coding = CovariateCoding((("sample", ("a", "b")),), (("pct_mito", 1.5, 2.0),))
    assert CovariateCoding.from_json(json.loads(json.dumps(coding.to_json())), "here") == coding
    with pytest.raises(InputError, match="unreadable covariate record"):
        CovariateCoding.from_json({"categorical": [{"key": "sample"}]}, "here")


# -- the command line ---------------------------------------------------------------------------------
def test_fit_with_covariates_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _counts().write_h5ad(tmp_path / "cells.h5ad")
    fit = ["fit", str(tmp_path / "cells.h5ad"), "--batch-key", "sample", "--covariates", "donor",
           "--continuous-covariates", "pct_mito", "--epochs", "2", "--hidden", "32,16", "--c-red", "10",
           "--n-top-genes", "50", "--no-progress"]
    assert main([*fit, "-o", str(tmp_path / "out.h5ad"), "--model-dir", str(tmp_path / "model")]) == 0, \
        capsys.readouterr().err
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.uns["sivae"]["params"]["batch_key"] == "sample"
    assert list(out.uns["sivae"]["params"]["categorical_covariate_keys"]) == ["donor"]
    assert out.uns["sivae_preprocess"]["batch_key"] == "sample"
    # the effects kept in the file: features x (3 batches, 2 donors, pct_mito)
    assert out.varm["sivae_batch_effects"].shape == (50, 6)
    assert list(out.uns["sivae"]["batch_effects"]) == ["sample:s0", "sample:s1", "sample:s2", "donor:d1", "donor:d2",
                                                       "pct_mito:per_sd"]
    model = sivae.load_model(tmp_path / "model")
    assert model.covariate_coding.keys == ("sample", "donor", "pct_mito")
    np.testing.assert_array_equal(model.get_batch_effects().to_numpy(), out.varm["sivae_batch_effects"])
    capsys.readouterr()
    bad = [*fit, "--covariates", "lane", "-o", str(tmp_path / "bad.h5ad")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "adata.obs has no column 'lane'" in err and "Traceback" not in err
    assert not (tmp_path / "bad.h5ad").exists()
