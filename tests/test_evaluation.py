"""Cross-validated evaluation (sivae.evaluation): folds, held-out k-NN accuracy, no leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae import evaluation as ev

TINY = dict(encoder_hidden=(32, 16), c_red=20, batch_size=64, patience=3)


def _planted_counts(n_per_type: int = 60, n_types: int = 3, n_genes: int = 60, seed: int = 0) -> AnnData:
    """Poisson counts; each type has 10 marker genes at 8x the base rate."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"type{t}" for t in range(n_types)], n_per_type)
    rate = np.full((len(labels), n_genes), 2.0)
    for t in range(n_types):
        rate[labels == f"type{t}", t * 10:(t + 1) * 10] *= 8
    X = rng.poisson(rate * rng.uniform(0.5, 1.5, size=(len(labels), 1))).astype(np.float32)
    obs = pd.DataFrame({KEYS.CELL_TYPE: pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    return AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


# -- folds ----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=20, max_size=120), st.integers(2, 5), st.integers(0, 99))
def test_folds_are_disjoint_cover_every_cell_and_are_stratified(raw, n_folds, seed):
    labels = np.asarray(raw)
    counts = np.bincount(labels, minlength=4)
    if (counts[counts > 0] < n_folds).any() or (counts > 0).sum() < 2:
        with pytest.raises(InputError):
            ev.stratified_folds(labels, n_folds=n_folds, seed=seed)
        return
    folds = ev.stratified_folds(labels, n_folds=n_folds, seed=seed)
    assert len(folds) == n_folds
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(labels)))  # every cell held out exactly once
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert len(train) + len(test) == len(labels)
        for c in np.unique(labels):  # each class's share of a fold is within one cell of even
            assert abs((labels[test] == c).sum() - counts[c] / n_folds) < 1 + 1e-9


def test_default_k_follows_the_paper():
    assert ev.default_k(np.repeat(["a", "b"], 500)) == 15  # under 5,000 cells
    assert ev.default_k(np.repeat(["a", "b"], 3000)) == 80  # large, every class big enough
    # large but one class has 50 cells: it cannot fill 80 neighbours in a training fold
    assert ev.default_k(np.r_[np.repeat("a", 6000), np.repeat("b", 50)]) == 15


# -- k-NN accuracy ---------------------------------------------------------------------------------
def test_perfect_embedding_scores_one_and_shuffled_scores_chance():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 100)
    perfect = np.eye(4)[labels] * 10 + rng.normal(scale=0.1, size=(400, 4))
    folds = ev.stratified_folds(labels, n_folds=5, seed=0)
    accs = [ev.heldout_knn_accuracy(perfect[tr], labels[tr], perfect[te], labels[te]) for tr, te in folds]
    assert np.allclose(accs, 1.0)
    assert sivae.tl.knn_accuracy(perfect, labels) == 1.0
    shuffled = perfect[rng.permutation(400)]
    chance = [ev.heldout_knn_accuracy(shuffled[tr], labels[tr], shuffled[te], labels[te]) for tr, te in folds]
    assert abs(np.mean(chance) - 0.25) < 0.08
    assert abs(sivae.tl.knn_accuracy(shuffled, labels) - 0.25) < 0.08


def test_heldout_accuracy_refuses_mismatched_input():
    with pytest.raises(InputError, match="dimensions"):
        ev.heldout_knn_accuracy(np.zeros((20, 2)), np.zeros(20), np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(InputError, match="k=30"):
        ev.heldout_knn_accuracy(np.zeros((20, 2)), np.zeros(20), np.zeros((5, 2)), np.zeros(5), k=30)


# -- preprocessing and training see the training cells only ------------------------------------------
def test_split_fold_fits_preprocessing_on_training_cells_only():
    adata = _planted_counts()
    folds = ev.stratified_folds(adata.obs[KEYS.CELL_TYPE], n_folds=3, seed=0)
    tr, te = folds[0]
    train, test = ev.split_fold(adata, tr, te, n_top_genes=30)
    assert train.n_vars == 30 and list(test.var_names) == list(train.var_names)
    raw = adata.X.toarray()
    lognorm = np.log1p(raw / raw.sum(1, keepdims=True) * 1e4)[:, adata.var_names.get_indexer(train.var_names)]
    mean, std = lognorm[tr].mean(0), lognorm[tr].std(0, ddof=1)
    assert np.allclose(train.var[KEYS.FEATURE_MEAN], mean, atol=1e-4)  # training cells only ...
    assert not np.allclose(mean, lognorm.mean(0), atol=1e-3)  # ... which differ from all cells'
    expected = np.clip((lognorm[te] - mean) / std, -10, 10)
    assert np.allclose(test.X, expected, atol=1e-3)
    assert np.array_equal(test.layers[KEYS.COUNTS].toarray(), raw[te][:, adata.var_names.get_indexer(test.var_names)])
    with pytest.raises(InputError, match="share cells"):
        ev.split_fold(adata, tr, np.r_[te, tr[:1]])


def test_split_fold_scale_mode_uses_training_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=3.0, size=(50, 4)).astype(np.float32)
    adata = AnnData(X)
    train, test = ev.split_fold(adata, np.arange(40), np.arange(40, 50))
    mean, std = X[:40].mean(0), X[:40].std(0, ddof=1)
    assert np.allclose(test.X, (X[40:] - mean) / std, atol=1e-5)


def test_cross_validate_never_trains_on_held_out_cells():
    adata = _planted_counts()
    seen: list[tuple[set, set]] = []

    def recording(train, test):
        seen.append((set(train.obs_names), set(test.obs_names)))
        return ev.pca_embedder(3)(train, test)

    table = ev.cross_validate(adata, recording, n_folds=3, n_top_genes=40)
    assert len(seen) == 3
    for train_names, test_names in seen:
        assert not train_names & test_names
    assert set().union(*(t for _, t in seen)) == set(adata.obs_names)
    assert (table["accuracy"] > 0.9).all()  # planted markers separate the types
    assert adata.uns[KEYS.CROSS_VALIDATION] is table
    # the same embedding with labels shuffled scores near chance (1/3)
    shuffled = adata.copy()
    shuffled.obs[KEYS.CELL_TYPE] = np.random.default_rng(0).permutation(adata.obs[KEYS.CELL_TYPE].to_numpy())
    chance = ev.cross_validate(shuffled, ev.pca_embedder(3), n_folds=3, n_top_genes=40, key_added=None)
    assert abs(chance["accuracy"].mean() - 1 / 3) < 0.12


def test_model_trained_on_one_fold_never_saw_the_other():
    adata = _planted_counts(n_per_type=40)
    folds = ev.stratified_folds(adata.obs[KEYS.CELL_TYPE], n_folds=2, seed=0)
    embedder = ev.model_embedder(sivae.SIVAE, max_epochs=8, pretrain_epochs=4, n_latent=2, **TINY)
    table = ev.cross_validate(adata, embedder, folds=folds[:1], n_top_genes=40)
    model = embedder.last_model
    trained_on = set(model.adata.obs_names)
    assert trained_on == set(adata.obs_names[folds[0][0]])
    assert not trained_on & set(adata.obs_names[folds[0][1]])
    assert len(model.train_idx) + len(model.val_idx) == len(folds[0][0])  # its early stopping too
    assert len(table) == 1 and 0.0 <= table["accuracy"].iloc[0] <= 1.0
    # the held-out cells went through the trained encoder, not through training
    assert model.get_cell_embedding().shape == (len(folds[0][0]), 2)


def test_model_embedder_trains_by_the_procedure_it_is_given():
    adata = _planted_counts(n_per_type=20)
    folds = ev.stratified_folds(adata.obs[KEYS.CELL_TYPE], n_folds=2, seed=0)
    for pretraining, expected in ((None, "finetune"), ("paper", "paper")):
        embedder = ev.model_embedder(sivae.SIVAE, max_epochs=2, pretrain_epochs=1, pretraining=pretraining,
                                     n_latent=2, **TINY)
        ev.cross_validate(adata, embedder, folds=folds[:1], n_top_genes=40, key_added=None)
        assert embedder.last_model.adata.uns["sivae"]["training"]["pretraining"] == expected


def test_cross_validate_refuses_missing_labels_and_bad_embedders():
    adata = _planted_counts()
    with pytest.raises(InputError, match="no column"):
        ev.cross_validate(adata, ev.pca_embedder(2), label_key="nope")
    with pytest.raises(InputError, match="returned"):
        ev.cross_validate(adata, lambda tr, te: (np.zeros((3, 2)), np.zeros((3, 2))), n_folds=3)
