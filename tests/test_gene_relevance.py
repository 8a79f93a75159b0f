"""sivae.tl.gene_relevance: partial derivatives recovered on synthetic fields with known gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import gene_relevance, summarize_attributions

pytestmark = pytest.mark.usefixtures("one_thread")


def _field(n_cells: int = 600, n_genes: int = 12, seed: int = 0) -> tuple[AnnData, np.ndarray]:
    # genes 1.. are linear in the 2-d embedding, gradient A[g]; gene 0 is c1^2 + c2
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-1, 1, (n_cells, 2))
    A = rng.normal(size=(n_genes, 2))
    X = coords @ A.T + 0.01 * rng.normal(size=(n_cells, n_genes))
    X[:, 0] = coords[:, 0] ** 2 + coords[:, 1]
    adata = AnnData(X.astype(np.float32))
    adata.obsm["X_sivae"] = coords
    return adata, A


def test_gene_relevance_recovers_the_gradient_of_a_linear_field():
    adata, A = _field()
    partials = gene_relevance(adata, n_neighbors=30).to_numpy()  # (cells, genes, 2)
    assert partials.shape == (600, 12, 2)
    typical = np.nanmedian(partials, 0)[1:]  # (genes, 2)
    cosine = (typical * A[1:]).sum(1) / np.linalg.norm(typical, axis=1) / np.linalg.norm(A[1:], axis=1)
    magnitude = np.linalg.norm(typical, axis=1) / np.linalg.norm(A[1:], axis=1)
    print(f"\nGene Relevance on a linear field: min cosine to the true gradient {cosine.min():.3f}")
    assert cosine.min() > 0.95
    # the median of difference quotients mixes in the other axis, so sizes are only roughly right
    assert np.all((magnitude > 0.6) & (magnitude < 1.6))


def test_gene_relevance_follows_a_gradient_that_changes_across_cells():
    adata, _ = _field()
    coords = adata.obsm["X_sivae"]
    partials = gene_relevance(adata, n_neighbors=30, use_rep="X_sivae").to_numpy()
    # d/dc1 (c1^2 + c2) = 2 c1, d/dc2 = 1
    assert np.corrcoef(partials[:, 0, 0], 2 * coords[:, 0])[0, 1] > 0.9
    assert abs(np.nanmedian(partials[:, 0, 1]) - 1.0) < 0.15


def test_summary_of_gene_relevance_points_along_the_varying_gradient_and_is_stored():
    adata, _ = _field()
    rel = gene_relevance(adata, n_neighbors=30, dims=[0])
    U = summarize_attributions(rel, key_added=KEYS.GENE_RELEVANCE)
    assert adata.varm[KEYS.GENE_RELEVANCE].shape == (12, 1)
    # only gene 0's partial along dim 1 varies across cells, so it dominates the component
    assert np.argmax(np.abs(U[:, 0])) == 0


def test_zero_and_unchanged_expression_are_treated_as_destiny_does():
    # a zero reference is replaced by a value far below any measured one (a drop-out must not
    # look like "no change"); a difference of exactly 0 gives no quotient
    adata, _ = _field(n_cells=200)
    X = adata.X.copy()
    X[:, 3] = 0.0  # never measured: partials tiny, not NaN
    X[:, 4] = 1.0  # measured and constant: no quotient at all
    sparse = AnnData(sp.csr_matrix(X), obsm={"X_sivae": adata.obsm["X_sivae"]})
    partials = gene_relevance(sparse, n_neighbors=10).to_numpy()
    assert np.abs(partials[:, 3]).max() < 1e-3 * np.nanmax(np.abs(partials[:, 1]))
    assert np.isnan(partials[:, 4]).all()
    assert np.isfinite(partials[:, [1, 2]]).all()


def test_bad_input_is_refused():
    adata, _ = _field(n_cells=50)
    with pytest.raises(InputError, match="no 'X_vae' embedding"):
        gene_relevance(adata, basis="vae")
    with pytest.raises(InputError, match="n_neighbors must be an integer from 2 to 49"):
        gene_relevance(adata, n_neighbors=50)
    with pytest.raises(InputError, match="dims must index"):
        gene_relevance(adata, dims=[2], n_neighbors=10)
    with pytest.raises(InputError, match="no 'counts'"):
        gene_relevance(adata, layer="counts", n_neighbors=10)


@settings(max_examples=25, deadline=None)
@given(k=st.one_of(st.integers(-5, 100), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_any_n_neighbors_is_accepted_or_refused_with_one_sentence(k):
    adata, _ = _field(n_cells=30, n_genes=4)
    try:
        rel = gene_relevance(adata, n_neighbors=k, use_rep="X_sivae")
    except InputError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(k, int) and 2 <= k < 30
        assert rel.neighbours.shape == (30, k)
