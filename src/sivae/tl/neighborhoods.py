"""Gene neighbourhoods: siVAE-Euc neighbours in the loading space, and the paper's benchmark that
compares them with a GRN method's (paper, Methods "Identifying gene co-expression network
neighbors", "Benchmarking gene neighborhoods", "Quantifying overlap").
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.validate import check_matrix

from ._grouped import GroupedMLP, check_training, dense_cells, pve, split_cells, standardise, train_grouped
from .centrality import degree_centrality

# a method of compare_neighborhoods: a genes x genes weight matrix (DataFrame, larger = closer),
# or a gene embedding (an adata.varm key, or a genes x dims array/DataFrame; Euclidean neighbours)
Method = Union[pd.DataFrame, np.ndarray, str]


def gene_indices(names: Any, genes: Sequence[str]) -> np.ndarray:
    """Positions of ``genes`` in ``names``; an unknown name is refused with its closest matches."""
    index = pd.Index(np.asarray(names, dtype=str))
    if not index.is_unique:  # a query named twice is ambiguous; other duplicates do no harm
        counts = index.value_counts()
        twice = [str(g) for g in genes if counts.get(str(g), 0) > 1]
        if twice:
            raise InputError(f"gene {twice[0]!r} appears {counts[twice[0]]} times in adata.var_names, so which "
                             "one is meant is unclear; call adata.var_names_make_unique() first")
    positions = index.get_indexer_for(list(genes))
    if (positions < 0).any():
        missing = str(np.asarray(genes, dtype=object)[positions < 0][0])
        close = difflib.get_close_matches(missing, index.tolist(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "check adata.var_names"
        raise InputError(f"gene {missing!r} is not in the data; {hint}")
    return positions


def _check_k(k: Any, n_genes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be an integer >= 1; got {k!r}")
    if k >= n_genes:
        raise InputError(f"k={k} neighbours need more genes than the {n_genes} there are; choose k <= {n_genes - 1}")
    return int(k)


def neighbors(adata: AnnData, *, gene: str, k: int = 20, key: str = KEYS.LOADINGS) -> pd.Series:
    """siVAE-Euc: the ``k`` genes nearest ``gene`` in the feature embedding (Euclidean).

    Parameters
    ----------
    adata
        AnnData after ``model.train()``; reads ``adata.varm[key]``.
    gene
        A name in ``adata.var_names``.
    k
        Number of neighbours, at most the number of genes minus one.
    key
        The embedding in ``adata.varm`` (default ``"sivae_loadings"``).

    Returns
    -------
    pandas.Series
        Euclidean distance of the ``k`` nearest genes, nearest first, indexed by gene name.
    """
    embedding = _embedding(adata, key)
    q = gene_indices(adata.var_names, [gene])[0]
    k = _check_k(k, adata.n_vars)
    search = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
    dist, idx = search.kneighbors(embedding[q : q + 1])
    keep = idx[0] != q  # the gene itself (or, with duplicates, one of its twins) is left out
    dist, idx = dist[0][keep][:k], idx[0][keep][:k]
    return pd.Series(dist, index=adata.var_names[idx].copy(), name=f"distance to {gene}")


def _embedding(adata: AnnData, key: str) -> np.ndarray:
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData; got {type(adata).__name__}")
    if key not in adata.varm:
        raise InputError(f"adata.varm has no {key!r}; train a model on this AnnData first (model.train())")
    check_matrix(adata.varm[key], f"adata.varm[{key!r}]")  # complex would lose its imaginary part silently
    return _finite_matrix(adata.varm[key], f"adata.varm[{key!r}]")


def _finite_matrix(value: Any, what: str) -> np.ndarray:
    # a genes x dims embedding or genes x genes network: numbers, at least one column, all finite
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a numeric matrix; got {type(value).__name__}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise InputError(f"{what} must be a genes x dims matrix with at least one column; got shape {matrix.shape}")
    n_bad = int((~np.isfinite(matrix)).sum())
    if n_bad:
        raise InputError(f"{what} holds {n_bad} NaN or infinite values; neighbours by distance or weight are "
                         "undefined there: recompute it")
    return matrix


def neighbor_sets(method: Method, adata: AnnData, query: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) gene indices of each query's k nearest genes under one method."""
    n_genes = adata.n_vars
    if isinstance(method, str):
        method = _embedding(adata, method)
    matrix = _aligned(method, adata)
    if matrix.shape == (n_genes, n_genes) and not _looks_like_embedding(method, n_genes):
        w = np.maximum(matrix, matrix.T)  # directed networks (GRNBoost2): the stronger direction
        w[np.arange(n_genes), np.arange(n_genes)] = -np.inf
        order = np.argsort(-w[query], axis=1, kind="stable")
        return order[:, :k]
    search = NearestNeighbors(n_neighbors=k + 1).fit(matrix)
    idx = search.kneighbors(matrix[query], return_distance=False)
    return np.stack([row[row != q][:k] for row, q in zip(idx, query)])


def _looks_like_embedding(method: Any, n_genes: int) -> bool:
    # a square DataFrame whose columns are not the genes is an embedding with F dims (rare)
    return isinstance(method, pd.DataFrame) and method.shape[1] == n_genes and not method.columns.equals(method.index)


def _aligned(method: Any, adata: AnnData) -> np.ndarray:
    # a method's matrix with rows (and, for networks, columns) in adata.var_names order
    if isinstance(method, pd.DataFrame):
        rows = gene_indices(method.index, adata.var_names)
        values = _finite_matrix(method, "a method's matrix")
        if method.shape[0] == method.shape[1] and method.columns.equals(method.index):
            return values[np.ix_(rows, rows)]
        return values[rows]
    matrix = _finite_matrix(method, "a method's matrix")
    if matrix.ndim != 2 or matrix.shape[0] != adata.n_vars:
        raise InputError(f"a method must give one row per gene ({adata.n_vars}); got shape {matrix.shape}")
    return matrix


def _method_centrality(name: str, method: Method, adata: AnnData, given: Mapping[str, Any]) -> pd.Series | None:
    # the centrality that picks a method's candidate query genes (None: no constraint)
    if name in given:
        return pd.Series(np.asarray(given[name], dtype=np.float64), index=adata.var_names)
    if isinstance(method, str):
        column = method.replace("_loadings", "_centrality")
        return adata.var[column].astype(np.float64) if column in adata.var else None
    matrix = _aligned(method, adata)
    if matrix.shape == (adata.n_vars, adata.n_vars) and not _looks_like_embedding(method, adata.n_vars):
        return degree_centrality(pd.DataFrame(matrix, index=adata.var_names, columns=adata.var_names))
    return None


def compare_neighborhoods(
    adata: AnnData,
    methods: Mapping[str, Method],
    *,
    k: int = 20,
    query: Sequence[str] | None = None,
    n_top: int = 500,
    centralities: Mapping[str, Any] | None = None,
    hidden: Sequence[int] = (16, 8, 4),
    epochs: int = 30,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    holdout_fraction: float = 0.2,
    max_cells: int | None = 10_000,
    layer: str | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> dict[str, Any]:
    """The paper's neighbourhood benchmark: how well each method's k nearest genes predict a gene.

    For every query gene and method, the method's ``k`` nearest genes feed a small network
    (k -> 16-8-4 -> 1, the paper's) that predicts the query gene; it trains on a seeded part of
    the cells and its PVE is measured on the rest. All (method, query) networks train together as
    one grouped model. Also the overlap of the neighbour sets between methods: mean Jaccard index,
    and mean Pearson correlation between the expression of one set's genes and the other's
    (the k x k correlations averaged), both averaged over query genes.

    Parameters
    ----------
    adata
        Cells x genes, scaled; reads ``adata.X`` (or ``adata.layers[layer]``), and ``adata.varm``
        / ``adata.var`` for methods given by key.
    methods
        Name -> a genes x genes weight DataFrame (larger = closer, e.g. from ``sivae.tl.grn``),
        or a gene embedding: an ``adata.varm`` key such as ``"sivae_loadings"`` (siVAE-Euc) or a
        genes x dims array/DataFrame (Euclidean neighbours).
    k
        Neighbours per query gene (the paper's: 20).
    query
        Query gene names; default the intersection of each method's ``n_top`` most central genes
        (degree centrality for networks, ``adata.var["<prefix>_centrality"]`` for an embedding
        key, or ``centralities[name]`` when given).
    hidden, epochs, batch_size, learning_rate, holdout_fraction, max_cells, seed
        The predicting networks, their training and the held-out cells.

    Returns
    -------
    dict
        ``query`` (names), ``neighbors`` (method -> queries x k DataFrame of names), ``pve``
        (queries x methods DataFrame), ``jaccard`` and ``correlation`` (methods x methods
        DataFrames). ``pve``, ``jaccard``, ``correlation`` and ``query`` are also written to
        ``adata.uns[key_added]`` (None: ``"sivae_neighborhoods"``, the key rule of
        ``sivae.tl``). A query gene constant on the held-out cells has a NaN PVE.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData; got {type(adata).__name__}")
    if not isinstance(methods, Mapping) or len(methods) < 1:
        raise InputError("methods must be a dict of name -> weights or embedding, with at least one entry")
    hidden, epochs, batch_size, learning_rate, holdout_fraction, max_cells, seed = check_training(
        hidden, epochs, batch_size, learning_rate, holdout_fraction, max_cells, seed)
    n_top = _params.count(n_top, "n_top")
    k = _check_k(k, adata.n_vars)
    X = torch.from_numpy(dense_cells(adata, layer, max_cells, seed))
    q = _query_genes(adata, methods, query, n_top, centralities or {})
    names = list(methods)
    sets = {name: neighbor_sets(methods[name], adata, q, k) for name in names}
    pves = _neighborhood_pve(X, q, [sets[n] for n in names], hidden, epochs, batch_size, learning_rate,
                             holdout_fraction, seed)
    genes = adata.var_names.to_numpy(dtype=str)
    result = {
        "query": genes[q].tolist(),
        "neighbors": {n: pd.DataFrame(genes[sets[n]], index=genes[q]) for n in names},
        "pve": pd.DataFrame(pves, index=genes[q], columns=names),
        "jaccard": _jaccard(sets, names),
        "correlation": _set_correlation(X, sets, names),
    }
    adata.uns[KEYS.NEIGHBORHOODS if key_added is None else key_added] = {key: result[key] for key in ("query", "pve", "jaccard", "correlation")}
    return result


def _query_genes(adata: AnnData, methods: Mapping[str, Method], query: Sequence[str] | None,
                 n_top: int, given: Mapping[str, Any]) -> np.ndarray:
    if query is not None:
        return gene_indices(adata.var_names, list(query))
    keep = np.ones(adata.n_vars, dtype=bool)
    for name, method in methods.items():
        scores = _method_centrality(name, method, adata, given)
        if scores is not None:
            top = np.argsort(-scores.to_numpy(), kind="stable")[:n_top]
            keep &= np.isin(np.arange(adata.n_vars), top)
    if not keep.any():
        raise InputError(f"no gene is among the top {n_top} central genes of every method; raise n_top or pass query=")
    return np.flatnonzero(keep)


def _neighborhood_pve(X: torch.Tensor, query: np.ndarray, sets: list[np.ndarray], hidden: Sequence[int],
                      epochs: int, batch_size: int, learning_rate: float, holdout_fraction: float,
                      seed: int) -> np.ndarray:
    # (queries, methods) held-out PVE; group g = method m * Q + query i
    n_query, n_methods = len(query), len(sets)
    train, held_out = split_cells(X.shape[0], holdout_fraction, seed)
    X = standardise(X, train)
    inputs_idx = torch.from_numpy(np.concatenate(sets))  # (G, k)
    target_idx = torch.from_numpy(np.tile(query, n_methods))  # (G,)

    def gather(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = X[rows]  # (B, F)
        return xb[:, inputs_idx].permute(1, 0, 2), xb[:, target_idx].T.unsqueeze(-1)  # (G, B, k), (G, B, 1)

    torch.manual_seed(seed)
    model = GroupedMLP(len(target_idx), inputs_idx.shape[1], tuple(hidden), 1)
    train_grouped(model, len(train), lambda rows: gather(torch.from_numpy(train[rows])), epochs=epochs,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    with torch.no_grad():
        inputs, truth = gather(torch.from_numpy(held_out))
        scores = pve(truth, model(inputs))[:, 0]  # (G,)
    return scores.numpy().reshape(n_methods, n_query).T


def _jaccard(sets: Mapping[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    out = np.ones((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names[:i]):
            inter = np.array([len(np.intersect1d(x, y)) for x, y in zip(sets[a], sets[b])])
            out[i, j] = out[j, i] = float(np.mean(inter / (2 * sets[a].shape[1] - inter)))
    return pd.DataFrame(out, index=names, columns=names)


def _set_correlation(X: torch.Tensor, sets: Mapping[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    # mean over queries of the mean k x k Pearson correlation between two methods' neighbour sets
    used = np.unique(np.concatenate([s.ravel() for s in sets.values()]))
    Z = X[:, torch.from_numpy(used)].double()
    Z = (Z - Z.mean(0)) / Z.std(0).clamp_min(1e-12)
    corr = ((Z.T @ Z) / (Z.shape[0] - 1)).numpy()  # (U, U) over the genes that occur in any set
    position = {g: i for i, g in enumerate(used)}
    local = {n: np.vectorize(position.get)(sets[n]) for n in names}
    out = np.empty((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            blocks = corr[local[a][:, :, None], local[b][:, None, :]]  # (Q, k, k)
            out[i, j] = float(blocks.mean())
    return pd.DataFrame(out, index=names, columns=names)
