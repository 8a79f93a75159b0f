"""Metrics and hubs on planted data whose answers are known analytically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.tl import hubs, hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette


def _clusters(n_per: int = 40, n_types: int = 3, spread: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(n_types) * 10.0
    x = np.concatenate([c + spread * rng.standard_normal((n_per, n_types)) for c in centres])
    labels = np.repeat([f"type_{i}" for i in range(n_types)], n_per)
    return x, labels


def test_knn_accuracy_is_one_on_separable_clusters():
    x, labels = _clusters()
    assert knn_accuracy(x, labels, k=5) == 1.0


def test_knn_accuracy_is_near_chance_on_shuffled_labels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 2))
    labels = rng.integers(0, 2, 400)
    assert 0.35 < knn_accuracy(x, labels) < 0.65


def test_knn_accuracy_accepts_categorical_labels_and_is_seeded():
    x, labels = _clusters(spread=8.0)
    cat = pd.Categorical(labels)
    assert knn_accuracy(x, cat, seed=3) == knn_accuracy(x, labels, seed=3)


@pytest.mark.parametrize(
    ("embedding", "labels", "kwargs", "match"),
    [
        (np.full((10, 2), np.nan), ["a", "b"] * 5, {}, "NaN"),
        (np.zeros((10, 2)), ["a", "b"] * 4, {}, "8 entries but the matrix has 10 rows"),
        (np.zeros((10, 2)), ["a"] * 10, {"n_folds": 2}, "at least 2 distinct"),
        (np.zeros((10, 2)), ["a"] * 8 + ["b"] * 2, {}, "fewer than n_folds=5"),
        (np.zeros((10, 2)), ["a", "b"] * 5, {"k": 9, "n_folds": 2}, "exceeds the 5 training"),
        (np.zeros((10, 2)), ["a", "b"] * 5, {"k": 0}, "k must be an integer"),
        (np.zeros(10), ["a", "b"] * 5, {}, "2-D"),
        (np.zeros((10, 2)), ["a", None] * 5, {}, "missing"),
    ],
)
def test_knn_accuracy_refuses_bad_input(embedding, labels, kwargs, match):
    with pytest.raises(InputError, match=match):
        knn_accuracy(embedding, labels, **kwargs)


def test_loading_silhouette_matches_hand_computation():
    # 1-D points {0, 1} vs {3, 4}: s = 1 - a/b per point = 5/7, 3/5, 3/5, 5/7 -> mean 23/35
    x = np.array([[0.0], [1.0], [3.0], [4.0]])
    assert loading_silhouette(x, ["a", "a", "b", "b"]) == pytest.approx(23 / 35)


def test_loading_silhouette_is_one_for_coincident_groups():
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]]), 4, axis=0)
    assert loading_silhouette(x, np.repeat(["c0", "c1", "c2"], 4)) == pytest.approx(1.0)


def test_loading_silhouette_refuses_one_group():
    with pytest.raises(InputError, match="between 2 and"):
        loading_silhouette(np.eye(4), ["a"] * 4)


def test_isolated_norm_ratio_planted():
    # isolated loadings have norm 1, community loadings norm 5
    x = np.array([[0.6, 0.8], [0.0, 1.0], [3.0, 4.0], [0.0, -5.0], [5.0, 0.0]])
    assert isolated_norm_ratio(x, [True, True, False, False, False]) == pytest.approx(0.2)
    assert isolated_norm_ratio(x, np.array([1, 1, 0, 0, 0])) == pytest.approx(0.2)


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(0, 2 * np.pi), scale=st.floats(0.01, 100), seed=st.integers(0, 10**6))
def test_isolated_norm_ratio_ignores_rotation_and_scale(angle, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, 2)) + 0.1
    mask = np.arange(20) < 7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    expected = isolated_norm_ratio(x, mask)
    assert isolated_norm_ratio(scale * x @ rot, mask) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mask", [[True] * 3, [False] * 3, [0.5, 1, 0]])
def test_isolated_norm_ratio_refuses_degenerate_masks(mask):
    with pytest.raises(InputError):
        isolated_norm_ratio(np.ones((3, 2)), mask)


def test_hubs_in_top_counts_planted_hubs():
    centrality = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    is_hub = np.array([True, False, False, True, True, False])
    assert hubs_in_top(centrality, is_hub, top=1) == 1  # 0.9
    assert hubs_in_top(centrality, is_hub, top=3) == 2  # 0.9, 0.8, 0.7
    assert hubs_in_top(centrality, is_hub, top=6) == 3
    with pytest.raises(InputError, match="exceeds the 6 features"):
        hubs_in_top(centrality, is_hub, top=7)
    with pytest.raises(InputError, match="NaN"):
        hubs_in_top([np.nan, 1.0], [True, False], top=1)


def _adata_with_centrality() -> AnnData:
    adata = AnnData(np.zeros((3, 5), dtype=np.float32))
    adata.var_names = [f"g{i}" for i in range(5)]
    adata.var[KEYS.CENTRALITY] = [0.1, 0.9, 0.5, 0.7, 0.3]
    return adata


def test_hubs_ranks_features_by_centrality():
    top = hubs(_adata_with_centrality(), n=3)
    assert list(top.index) == ["g1", "g3", "g2"]
    assert top.name == KEYS.CENTRALITY
    assert top.iloc[0] == pytest.approx(0.9)
    assert len(hubs(_adata_with_centrality(), n=50)) == 5


def test_hubs_without_training_says_what_to_do():
    adata = AnnData(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(InputError, match=r"run model.train\(\) first"):
        hubs(adata)
    with pytest.raises(InputError, match="n must be"):
        hubs(_adata_with_centrality(), n=0)
