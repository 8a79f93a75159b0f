"""Cell-type labels from canonical marker genes, for data sets that ship without labels.

A small, documented scoring-and-argmax, written here rather than borrowed because the rule must be
exactly what `sivae.datasets.kang`'s docstring states: scanpy's ``score_genes`` subtracts a random
control-gene background whose scale differs between cell types, so its scores cannot be compared
across types by an argmax.

The rule, per group of cells (e.g. per condition, so that a stimulus that shifts a marker's level
in every cell does not move the labels):

1. log-normalise the marker genes (counts per 10,000, log1p);
2. scale each marker by the 99th percentile of its nonzero values in the group, capped at 1, so a
   strongly and a weakly expressed marker weigh the same;
3. score each cell type by the mean of its scaled markers;
4. average each cell's scores over its ``n_neighbors`` nearest cells of the same group (PCA of
   the log-normalised highly variable genes), so that one marker missed by dropout does not decide
   a label;
5. take the type with the highest score; a cell whose best score is under ``min_score`` or beats
   the runner-up by under ``min_margin`` is "unassigned".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError

__all__ = ["PBMC_MARKERS", "PBMC_T_SPLIT", "UNASSIGNED", "label_by_markers", "marker_scores"]

UNASSIGNED = "unassigned"

# Canonical PBMC markers (those of scanpy's and Seurat's PBMC tutorials). T cells are found first
# as one class by CD3E/CD3D and then split by CD8A/CD8B against IL7R (label_by_markers' ``split``):
# the CD3 genes are shared, so scored side by side they decide nothing between CD4 and CD8.
PBMC_MARKERS: dict[str, list[str]] = {
    "CD14 Monocytes": ["CD14", "LYZ", "S100A8", "S100A9"],
    "FCGR3A Monocytes": ["FCGR3A", "MS4A7"],
    "T": ["CD3E", "CD3D"],
    "NK": ["NKG7", "GNLY"],
    "B": ["MS4A1", "CD79A"],
    "Megakaryocytes": ["PPBP", "PF4"],
    "Dendritic": ["FCER1A", "CLEC10A"],
}
PBMC_T_SPLIT: dict[str, tuple[str, list[str], str, list[str]]] = {
    "T": ("CD8 T", ["CD8A", "CD8B"], "CD4 T", ["IL7R"]),
}


def _scaled_markers(counts: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    # log-normalised marker columns of one group, each scaled by its nonzero 99th percentile
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    sub = counts[:, columns].toarray().astype(np.float64)
    lognorm = np.log1p(sub / np.maximum(totals, 1.0)[:, None] * 1e4)
    for j in range(lognorm.shape[1]):
        positive = lognorm[:, j][lognorm[:, j] > 0]
        if len(positive):
            lognorm[:, j] = np.minimum(lognorm[:, j] / np.quantile(positive, 0.99), 1.0)
    return lognorm


def _neighbours(counts: sp.csr_matrix, n_neighbors: int, seed: int) -> np.ndarray:
    # indices of each cell's nearest cells (itself included) on the PCA of log-normalised HVGs
    import scanpy as sc
    from anndata import AnnData
    from sklearn.neighbors import NearestNeighbors

    adata = AnnData(sp.csr_matrix(counts, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scanpy's notes on small or constant genes
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=min(2000, adata.n_vars), flavor="seurat")
        n_comps = max(1, min(30, adata.n_obs - 1, int(adata.var["highly_variable"].sum()) - 1))
        sc.pp.pca(adata, n_comps=n_comps, mask_var="highly_variable", random_state=seed)
    k = min(n_neighbors, adata.n_obs)
    return NearestNeighbors(n_neighbors=k).fit(adata.obsm["X_pca"]).kneighbors(adata.obsm["X_pca"])[1]


def marker_scores(
    counts: sp.spmatrix | np.ndarray,
    var_names: Sequence[str],
    markers: Mapping[str, Sequence[str]],
    *,
    groups: Sequence[str] | None = None,
    n_neighbors: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Each cell's score for each marker set (steps 1-4 of the module's rule).

    Parameters
    ----------
    counts
        Cells x genes raw counts.
    var_names
        Gene names of ``counts``' columns.
    markers
        Name -> marker genes; every gene must be in ``var_names``.
    groups
        A group per cell (e.g. the condition); scaling and neighbours stay within a group.
    n_neighbors
        Cells averaged per cell (itself included); 1 switches the smoothing off.
    seed
        Seed of the PCA.

    Returns
    -------
    pandas.DataFrame
        Cells x marker sets, scores in [0, 1].
    """
    names = pd.Index(var_names)
    missing = sorted({g for genes in markers.values() for g in genes} - set(names))
    if missing:
        raise InputError(f"marker genes {missing} are not in the data; pass markers the data has")
    counts = sp.csr_matrix(counts)
    genes = sorted({g for genes in markers.values() for g in genes})
    columns = names.get_indexer(genes)
    where = {g: j for j, g in enumerate(genes)}
    groups = np.zeros(counts.shape[0]) if groups is None else np.asarray(groups)
    scores = np.zeros((counts.shape[0], len(markers)))
    for group in pd.unique(groups):
        rows = np.flatnonzero(groups == group)
        scaled = _scaled_markers(counts[rows], columns)
        raw = np.stack([scaled[:, [where[g] for g in genes]].mean(axis=1) for genes in markers.values()], axis=1)
        if n_neighbors > 1 and len(rows) > 2:
            raw = raw[_neighbours(counts[rows], n_neighbors, seed)].mean(axis=1)
        scores[rows] = raw
    return pd.DataFrame(scores, columns=list(markers))


def label_by_markers(
    counts: sp.spmatrix | np.ndarray,
    var_names: Sequence[str],
    markers: Mapping[str, Sequence[str]] = PBMC_MARKERS,
    *,
    split: Mapping[str, tuple[str, Sequence[str], str, Sequence[str]]] | None = None,
    groups: Sequence[str] | None = None,
    n_neighbors: int = 10,
    min_score: float = 0.1,
    min_margin: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """A label per cell by the module's rule (steps 1-5).

    Parameters
    ----------
    counts, var_names, markers, groups, n_neighbors, seed
        As in `marker_scores`.
    split
        Class -> (first name, its markers, second name, its markers): cells of that class get
        the first name when the first markers' score is above the second's, else the second.
        Default: `PBMC_T_SPLIT` when ``markers`` is `PBMC_MARKERS`, else none.
    min_score, min_margin
        A cell whose best score is under ``min_score``, or above the runner-up by under
        ``min_margin``, is labelled `UNASSIGNED`.

    Returns
    -------
    numpy.ndarray
        A label (str) per cell.
    """
    if split is None:
        split = PBMC_T_SPLIT if markers is PBMC_MARKERS else {}
    extra = {f"{cls}\t{i}": list(spec[2 * i + 1]) for cls, spec in split.items() for i in (0, 1)}
    scores = marker_scores(counts, var_names, {**markers, **extra}, groups=groups,
                           n_neighbors=n_neighbors, seed=seed)
    main = scores[list(markers)].to_numpy()
    labels = np.asarray(list(markers), dtype=object)[main.argmax(axis=1)]
    for cls, (first, _, second, _) in split.items():
        rows = labels == cls
        above = scores[f"{cls}\t0"].to_numpy()[rows] > scores[f"{cls}\t1"].to_numpy()[rows]
        labels[rows] = np.where(above, first, second)
    ranked = np.sort(main, axis=1)
    margin = ranked[:, -1] - ranked[:, -2] if main.shape[1] > 1 else ranked[:, -1]
    labels[(ranked[:, -1] < min_score) | (margin < min_margin)] = UNASSIGNED
    return labels.astype(str)
