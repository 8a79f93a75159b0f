"""Hub and neighbourhood baselines that cost seconds: what a trained model's centrality must beat.

Per gene: the share of cells it is detected in, its mean expression, its R^2 from the top-K
principal components (the linear analogue of siVAE's reconstruction accuracy, same K) and its
mean absolute correlation with all other genes (correlation degree). Per query gene, two
neighbourhoods: the genes nearest in PCA loadings, and the most correlated genes; both are
inputs that ``sivae.tl.compare_neighborhoods`` takes beside siVAE's loadings and GRN networks.
The VAE's per-gene reconstruction accuracy is ``sivae.VAE(...).train()``'s
``adata.var["vae_centrality"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from sivae._constants import KEYS
from sivae._errors import InputError

_CORRELATION_BLOCK = 1024  # genes per block of the correlation matrix in correlation_degree


def detection_rate(adata: AnnData, *, layer: str | None = KEYS.COUNTS) -> pd.Series:
    """Share of cells in which each gene has a non-zero count.

    Parameters
    ----------
    adata
        Cells x genes; reads ``adata.layers[layer]`` (default the raw counts that
        ``sivae.pp.preprocess`` keeps in ``layers["counts"]``), or ``adata.X`` for None.
    layer
        Layer of counts (any matrix where 0 means "not detected").

    Returns
    -------
    pandas.Series
        Per gene (indexed by ``adata.var_names``), in [0, 1], named "detection_rate".
    """
    X = _matrix(adata, layer, "detection_rate")
    detected = (X != 0).sum(0) if sp.issparse(X) else np.count_nonzero(X, axis=0)
    rate = np.asarray(detected, dtype=np.float64).ravel() / adata.n_obs
    return pd.Series(rate, index=adata.var_names.copy(), name="detection_rate")


def mean_expression(adata: AnnData, *, layer: str | None = KEYS.COUNTS) -> pd.Series:
    """Mean over cells of log1p(counts per 10,000) per gene (of ``adata.X`` as it is for ``layer=None``).

    Parameters
    ----------
    adata
        Cells x genes; reads ``adata.layers[layer]`` (raw counts, default ``layers["counts"]``)
        or ``adata.X`` for None.
    layer
        Layer of raw counts, normalised here; None: ``adata.X`` averaged as it is.

    Returns
    -------
    pandas.Series
        Per gene, named "mean_expression".
    """
    X = _matrix(adata, layer, "mean_expression")
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    if layer is not None:
        if (X < 0).any():
            raise InputError(f"adata.layers[{layer!r}] holds negative values; give a layer of raw counts")
        X = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1.0) * 1e4)
    return pd.Series(X.mean(0), index=adata.var_names.copy(), name="mean_expression")


def pca_centrality(adata: AnnData, *, n_components: int = 10, layer: str | None = None,
                   key_added: str | None = "pca_loadings") -> pd.Series:
    """Each gene's R^2 from the top ``n_components`` principal components of the cells.

    The linear analogue of siVAE's centrality (its reconstruction accuracy through K latent
    dimensions): the share of a gene's variance the rank-K PCA reconstruction keeps.

    Parameters
    ----------
    adata
        Cells x genes, scaled (e.g. by ``sivae.pp.preprocess``); reads ``adata.X`` or
        ``adata.layers[layer]``.
    n_components
        K, the number of components (use the model's ``n_latent``).
    layer
        Layer to read instead of ``adata.X``.
    key_added
        ``adata.varm`` key the genes' loadings (components scaled by their singular values,
        genes x K) are written to, for ``compare_neighborhoods`` (PCA-Euc neighbours); None:
        not written.

    Returns
    -------
    pandas.Series
        R^2 per gene in [0, 1] (NaN for a gene constant across cells), named "pca_centrality".
    """
    X = _dense(adata, layer, "pca_centrality")
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or \
            not 1 <= n_components < min(X.shape):
        raise InputError(f"n_components must be an integer from 1 to {min(X.shape) - 1}; got {n_components!r}")
    X = X - X.mean(0)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    loadings = vt[:n_components].T * s[:n_components]  # genes x K
    total = (X ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(total > 0, (loadings ** 2).sum(1) / total, np.nan)
    if key_added is not None:
        adata.varm[key_added] = loadings.astype(np.float32)
    return pd.Series(r2, index=adata.var_names.copy(), name="pca_centrality")


def correlation_network(adata: AnnData, *, layer: str | None = None) -> pd.DataFrame:
    """Absolute Pearson correlation between every pair of genes, the diagonal set to 0.

    As a genes x genes weight matrix it is a network like ``sivae.tl.grn``'s:
    ``degree_centrality`` of it is `correlation_degree`, and ``compare_neighborhoods`` takes
    it for the k most correlated genes of each query gene.

    Parameters
    ----------
    adata, layer
        As in `correlation_degree`.

    Returns
    -------
    pandas.DataFrame
        Genes x genes, indexed and labelled by ``adata.var_names``; 0 for a constant gene.
    """
    Z = _standardised(_dense(adata, layer, "correlation_network"))
    corr = np.abs(Z.T @ Z) / Z.shape[0]
    np.fill_diagonal(corr, 0.0)
    names = adata.var_names.copy()
    return pd.DataFrame(corr, index=names, columns=names)


def correlation_degree(adata: AnnData, *, layer: str | None = None) -> pd.Series:
    """Each gene's mean absolute Pearson correlation with all other genes.

    Computed in blocks of genes, so memory is genes x block rather than genes x genes.

    Parameters
    ----------
    adata
        Cells x genes; reads ``adata.X`` or ``adata.layers[layer]``.
    layer
        Layer to read instead of ``adata.X``.

    Returns
    -------
    pandas.Series
        Per gene, in [0, 1], named "correlation_degree".
    """
    Z = _standardised(_dense(adata, layer, "correlation_degree"))
    n_cells, n_genes = Z.shape
    if n_genes < 2:
        raise InputError(f"correlation_degree needs at least 2 genes; got {n_genes}")
    degree = np.empty(n_genes)
    for start in range(0, n_genes, _CORRELATION_BLOCK):
        block = np.abs(Z[:, start:start + _CORRELATION_BLOCK].T @ Z) / n_cells  # (b, F)
        diagonal = block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])]
        degree[start:start + block.shape[0]] = (block.sum(1) - diagonal) / (n_genes - 1)
    return pd.Series(degree, index=adata.var_names.copy(), name="correlation_degree")


def _standardised(X: np.ndarray) -> np.ndarray:
    # columns centred and scaled to unit variance; a constant column stays 0 (correlation 0)
    X = X - X.mean(0)
    sd = X.std(0)
    return X / np.where(sd > 0, sd, 1.0)


def _matrix(adata: AnnData, layer: str | None, caller: str):
    if not isinstance(adata, AnnData):
        raise InputError(f"{caller} expects an AnnData; got {type(adata).__name__}")
    if adata.n_obs < 2 or adata.n_vars < 1:
        raise InputError(f"{caller} needs at least 2 cells and 1 gene; got {adata.n_obs} x {adata.n_vars}")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata.layers has no {layer!r}; choose one of {list(adata.layers)} or layer=None for adata.X")
    return adata.X if layer is None else adata.layers[layer]


def _dense(adata: AnnData, layer: str | None, caller: str) -> np.ndarray:
    X = _matrix(adata, layer, caller)
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise InputError("the expression matrix holds NaN or infinite values; remove or impute them first")
    return X
