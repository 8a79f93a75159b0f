"""sivae.integration_metrics against hand-computed values, scib-metrics' numbers and planted mixing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from sivae import integration_metrics as im
from sivae._errors import InputError

# a regular tetrahedron: every point has the other three at the same distance
TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)


def test_ilisi_by_hand_on_equidistant_points():
    # perplexity 1 reads 3 neighbours; at equal distances the kernel is uniform whatever its width:
    # point 0 sees one "a" and two "b": 1 / ((1/3)^2 + (2/3)^2) = 9/5
    lisi = im.ilisi(TETRA, ["a", "a", "b", "b"], perplexity=1)
    np.testing.assert_allclose(lisi, 1.8)
    assert im.ilisi_score(TETRA, ["a", "a", "b", "b"], perplexity=1) == pytest.approx(0.8)


def test_kernel_reaches_the_perplexity():
    rng = np.random.default_rng(0)
    dist = np.sort(rng.random((50, 90)) * 3, axis=1)
    w = im._kernel_rows(dist, 30.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    entropy = -(w * np.log(w)).sum(axis=1)
    np.testing.assert_allclose(entropy, np.log(30.0), atol=1e-4)


def _three_batches(shift: float, seed: int = 0, n: int = 900):
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 10))
    x[:, 0] += shift * b
    return x, b


def test_ilisi_matches_scib_metrics():
    # scib-metrics 0.5.10's ilisi_knn (perplexity 30) on exactly these cells and their 90 sklearn
    # neighbours (computed once in a throwaway virtualenv; it needs jax, which we do not install)
    for shift, theirs in ((0.0, 0.83265495), (1.0, 0.6985676), (4.0, 0.023862362)):
        rng = np.random.default_rng(0)
        for earlier in range({0.0: 0, 1.0: 1, 4.0: 2}[shift]):  # the seeded stream they were drawn from
            rng.integers(0, 3, 900), rng.standard_normal((900, 10))
        b = rng.integers(0, 3, 900)
        x = rng.standard_normal((900, 10))
        x[:, 0] += shift * b
        assert im.ilisi_score(x, b) == pytest.approx(theirs, abs=1e-5)


def test_batch_entropy_by_hand():
    x = np.array([[0.0], [1.0], [3.0], [10.0]])
    # k=2: cell 0 sees 1 (a) and 2 (b) -> entropy log 2; cell 1 sees 0 (a), 2 (b) -> log 2;
    # cell 2 sees 1 (a), 0 (a) -> 0; cell 3 sees 2 (b), 1 (a) -> log 2; mean over log 2 = 3/4
    assert im.batch_entropy(x, ["a", "a", "b", "b"], k=2) == pytest.approx(0.75)


def test_kbet_by_hand():
    # two batches in equal shares, k=4: a neighbourhood of 4 of one batch gives chi2 = 4 on 1 df
    # (rejected at 0.05), one of 2 and 2 gives 0 (accepted)
    x = np.concatenate([np.arange(5.0), 100 + np.arange(5.0)])[:, None]
    apart = np.repeat(["a", "b"], 5)
    assert chi2.sf(4.0, 1) < 0.05
    assert im.kbet(x, apart, k=4) == pytest.approx(0.0)
    mixed = np.tile(["a", "b"], 5)
    # in 0..4 with batches a b a b a: cell 0 sees 1 2 3 4 -> b a b a: accepted; the same holds for
    # every cell here, by symmetry of the alternating pattern within each group of five
    assert im.kbet(x, mixed, k=4) == pytest.approx(1.0)


def test_mixing_metrics_order_planted_batch_effects():
    scores = {shift: (im.ilisi_score(*_three_batches(shift)), im.batch_entropy(*_three_batches(shift)),
                      im.kbet(*_three_batches(shift)))
              for shift in (0.0, 1.0, 4.0)}
    for j in range(3):
        assert scores[0.0][j] > scores[1.0][j] > scores[4.0][j]
    assert scores[0.0][1] > 0.9 and scores[4.0][1] < 0.3
    assert scores[0.0][2] > 0.8 and scores[4.0][2] < 0.1


def test_kbet_within_labels_ignores_composition():
    # two cell types far apart; type 0 only in batch a, type 1 mixed: per label, type 0 has
    # one batch and is not tested against the other's share
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((200, 2)), 50 + rng.standard_normal((200, 2))])
    labels = np.repeat(["t0", "t1"], 200)
    batches = np.concatenate([np.repeat("a", 200), rng.choice(["a", "b"], 200)])
    assert im.kbet(x, batches) < 0.6  # globally: type 0's cells see only batch a
    assert im.kbet(x, batches, labels) > 0.8


def test_label_metrics():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    s = 1 - (1 / 10.5 + 1 / 9.5) / 2  # a = 1; b = 10.5 or 9.5 (mean distance to the other label)
    assert im.label_silhouette(x, ["A", "A", "B", "B"]) == pytest.approx((s + 1) / 2)
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 50)
    apart = rng.standard_normal((200, 5)) + 10 * np.eye(5)[y]
    assert im.knn_label_accuracy(apart, y) == 1.0
    shuffled = im.knn_label_accuracy(apart, rng.permutation(y))
    assert shuffled < 0.45  # chance is 1/4


def test_bad_input_is_refused():
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(InputError, match="batches has one value"):
        im.batch_entropy(x, ["a"] * 20, k=5)
    with pytest.raises(InputError, match="k=30 needs more than 30 cells"):
        im.kbet(x, ["a", "b"] * 10, k=30)
    with pytest.raises(InputError, match="alpha must be in"):
        im.kbet(x, ["a", "b"] * 10, k=5, alpha=1.5)
    with pytest.raises(InputError, match="NaN"):
        im.batch_entropy(np.full((20, 2), np.nan), ["a", "b"] * 10, k=5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 4), st.floats(0, 3))
def test_mixing_scores_stay_in_range_and_ignore_cell_order(seed, n_batches, shift):
    rng = np.random.default_rng(seed)
    n = 120
    b = rng.integers(0, n_batches, n)
    b[:n_batches] = np.arange(n_batches)  # every batch present
    x = rng.standard_normal((n, 3)) + shift * b[:, None]
    order = rng.permutation(n)
    lisi = im.ilisi(x, b, perplexity=10)
    assert (lisi >= 1 - 1e-9).all() and (lisi <= n_batches + 1e-9).all()
    np.testing.assert_allclose(im.ilisi(x[order], b[order], perplexity=10), lisi[order], rtol=1e-6)
    entropy = im.batch_entropy(x, b, k=10)
    assert 0 <= entropy <= 1 + 1e-12
    assert im.batch_entropy(x[order], b[order], k=10) == pytest.approx(entropy)
    accept = im.kbet(x, b, k=10)
    assert 0 <= accept <= 1
    assert im.kbet(x[order], b[order], k=10) == pytest.approx(accept)
