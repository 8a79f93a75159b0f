"""Gene Relevance (Angerer et al. 2020): how each gene changes along each axis of a cell embedding.

For cell c and its k nearest neighbours j (found in expression space), the partial derivative
of gene g along embedding dimension d is the median over neighbours of the difference quotient
(x_jg - x_cg) / (e_jd - e_cd), computed only where the expression differs, and kept only where
at least two neighbours give a quotient. As in the authors' R package (destiny), a reference
expression of exactly 0 (a possible drop-out) is replaced by a value far below any measured one,
so that the difference is never 0 by drop-out alone. We write our own code; destiny's optional
smoothing of the partials along each coordinate is left out, because it needs every cell's
partials of a gene at once and we stream over cells.

The result has the shape of neural-network attributions (cells x genes x dims), so
``sivae.tl.summarize_attributions`` turns it into genes x dims loadings the same way (paper,
Methods "Feature embeddings for feature attribution methods and Gene Relevance").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.loaders import CellMatrix

from .attribution import CellwiseAttributions

_N_PCS = 50  # principal components of the expression used to find neighbours
_CHUNK_ELEMENTS = 2**23  # floats in one chunk's neighbour differences (b x k x F)


class GeneRelevance(CellwiseAttributions):
    """Per-cell partial derivatives of each gene along each embedding dimension; see :func:`gene_relevance`."""

    default_key = KEYS.GENE_RELEVANCE
    nan_means_missing = True  # NaN: fewer than two neighbours give a partial (0 in the summary)

    def __init__(self, adata: AnnData, matrix: CellMatrix, coords: np.ndarray, neighbours: np.ndarray,
                 small: float, batch_size: int, description: str) -> None:
        self._matrix, self._small = matrix, small
        self._coords = torch.from_numpy(np.asarray(coords, dtype=np.float32))
        self.neighbours = neighbours  # (n_cells, k) row indices, self excluded
        super().__init__(adata, np.arange(adata.n_obs), np.asarray(adata.var_names), coords.shape[1],
                         batch_size, description)

    def _chunk(self, rows: np.ndarray) -> torch.Tensor:
        nn_rows = self.neighbours[rows]  # (b, k)
        b, k = nn_rows.shape
        x_ref = self._matrix.rows(rows)  # (b, F)
        x_ref = torch.where(x_ref == 0, torch.full_like(x_ref, self._small), x_ref)
        dx = self._matrix.rows(nn_rows.ravel()).reshape(b, k, -1) - x_ref[:, None, :]  # (b, k, F)
        dx = torch.where(dx == 0, torch.full_like(dx, float("nan")), dx)  # cannot evaluate there
        de = self._coords[nn_rows] - self._coords[rows][:, None, :]  # (b, k, D)
        out = torch.empty(b, dx.shape[2], de.shape[2])
        for d in range(de.shape[2]):
            step = de[:, :, d : d + 1]
            quotient = torch.where(step == 0, torch.full_like(dx, float("nan")), dx / step)
            median = torch.nanquantile(quotient, 0.5, dim=1)  # the median, averaging the middle two
            enough = (~quotient.isnan()).sum(1) >= 2
            out[:, :, d] = torch.where(enough, median, torch.full_like(median, float("nan")))
        return out  # (b, F, D); NaN where a partial cannot be estimated


def _neighbours(adata: AnnData, X: object, use_rep: str | None, k: int, seed: int) -> np.ndarray:
    if use_rep is not None:
        if use_rep not in adata.obsm:
            raise InputError(f"adata.obsm has no {use_rep!r} to find neighbours in; pass one of {list(adata.obsm)} or None")
        rep = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    else:
        dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        n_pcs = min(_N_PCS, adata.n_obs - 1, adata.n_vars)
        rep = PCA(n_pcs, random_state=seed).fit_transform(dense.astype(np.float64))
    index = NearestNeighbors(n_neighbors=k + 1).fit(rep).kneighbors(rep, return_distance=False)
    # drop each cell itself (the first hit, unless a duplicate cell came first)
    keep = index != np.arange(len(index))[:, None]
    return np.stack([row[mask][:k] for row, mask in zip(index, keep)])


def _small_value(X: object) -> float:
    # destiny's stand-in for a zero reference: the smallest measured |value| over the number of zeros
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    n_zeros = int(np.prod(X.shape)) - int(np.count_nonzero(values))
    nonzero = np.abs(values[values != 0])
    if n_zeros == 0 or nonzero.size == 0:
        return 0.0
    return float(nonzero.min() / n_zeros)


def gene_relevance(
    adata: AnnData,
    *,
    basis: str = "sivae",
    n_neighbors: int = 100,
    dims: list[int] | None = None,
    layer: str | None = None,
    use_rep: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> GeneRelevance:
    """Gene Relevance of a cell embedding: partial derivatives of each gene along each dimension.

    Lazy like :func:`sivae.tl.attribute`: summarise with
    ``sivae.tl.summarize_attributions(rel, key_added="sivae_gene_relevance")`` (genes x dims,
    written to ``adata.varm``), or take per-cell partials with ``rel.to_numpy()``.

    Parameters
    ----------
    adata
        Cells x genes. Reads ``adata.obsm[f"X_{basis}"]`` and ``adata.X`` (or ``adata.layers[layer]``).
    basis
        The embedding: "sivae" reads ``obsm["X_sivae"]``; likewise "vae", "pca".
    n_neighbors
        k of the k-NN neighbourhoods (the paper tried 10, 100 and 1,000).
    dims
        Embedding dimensions to differentiate along (0-based); None: all.
    layer
        Expression to differentiate; None: ``adata.X``.
    use_rep
        ``obsm`` key to find neighbours in; None: the first 50 principal components of the
        expression (destiny finds them in expression space).
    seed
        Seed of that PCA.
    batch_size
        Cells per chunk; None keeps a chunk's b x k x genes differences near 32 MiB.

    Returns
    -------
    GeneRelevance
        Per-cell partials S[c, g, d] (NaN where fewer than two neighbours give one), by chunk.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    if not isinstance(basis, str):
        raise InputError(f"basis must be the name of an embedding in adata.obsm, such as 'sivae'; got {basis!r}")
    seed, batch_size = _params.seed(seed), _params.optional_count(batch_size, "batch_size")
    key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm:
        raise InputError(f"adata.obsm has no {key!r} embedding; train a model or pass basis= one of {list(adata.obsm)}")
    coords = np.asarray(adata.obsm[key], dtype=np.float64)
    if dims is not None:
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
            raise InputError(f"dims must be a list of dimension indices (0-based); got {dims!r}")
        dims = [_params.integer(d, "each entry of dims", minimum=0) for d in dims]
        if not len(dims) or max(dims) >= coords.shape[1]:
            raise InputError(f"dims must index the {coords.shape[1]} dimensions of {key!r}; got {list(dims)}")
        coords = coords[:, list(dims)]
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or not 2 <= n_neighbors < adata.n_obs:
        raise InputError(f"n_neighbors must be an integer from 2 to {adata.n_obs - 1} (cells - 1); got {n_neighbors!r}")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata.layers has no {layer!r}; pass one of {list(adata.layers)} or None for adata.X")
    X = adata.X if layer is None else adata.layers[layer]
    if not np.isfinite(X.data if sp.issparse(X) else np.asarray(X)).all() or not np.isfinite(coords).all():
        raise InputError(f"the expression or {key!r} holds NaN or infinite values; remove them first")
    neighbours = _neighbours(adata, X, use_rep, int(n_neighbors), seed)
    if batch_size is None:
        batch_size = int(np.clip(_CHUNK_ELEMENTS // (n_neighbors * adata.n_vars), 1, 1024))
    return GeneRelevance(adata, CellMatrix(X), coords, neighbours, _small_value(X), batch_size,
                         f"Gene Relevance on {key!r}, k={n_neighbors}")
