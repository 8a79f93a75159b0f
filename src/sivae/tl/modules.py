"""Gene modules: Leiden communities of the genes' k-NN graph in the loading space (siVAE-Euc, the
distance of `sivae.tl.neighbors`), with genes near the origin left unassigned; and each module's
activity per cell.

Why genes near the origin are left out: the interpretability term pulls a gene that no latent
programme explains toward the origin (isolated genes of the simulated network end with about a
fifth of the loading norm of community genes). Near the origin every direction is close, so a
k-NN graph would tie such genes to each other and to the weakest members of every module; they
are set aside before the graph is built and never forced into a module.
"""

from __future__ import annotations

from collections.abc import Mapping

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.mixture import GaussianMixture

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.validate import check_matrix

__all__ = ["gene_modules", "module_scores", "origin_threshold"]

# Ashman's D above which two Gaussian components count as separate groups (Ashman et al. 1994)
_SEPARATION = 2.0


def origin_threshold(norms: Any, *, seed: int = 0) -> tuple[float, float]:
    """The loading norm below which a gene counts as near the origin, from the norms themselves.

    A two-component Gaussian mixture (scikit-learn) is fitted to the log norms. When the two
    components are separate groups (Ashman's D > 2, i.e. their means lie more than about two
    pooled standard deviations apart), the threshold is where a gene becomes likelier to belong
    to the upper component than to the lower one; otherwise no gene is near the origin (0.0).

    Parameters
    ----------
    norms
        Euclidean norm of each gene's loadings.
    seed
        Seed of the mixture's initialisation.

    Returns
    -------
    tuple of float
        The threshold (0.0 when the norms form one group) and Ashman's D.
    """
    norms = np.asarray(norms, dtype=np.float64)
    positive = norms[norms > 0]
    threshold, d = _two_groups(np.log(positive), seed)
    return (float(np.exp(threshold)) if threshold is not None else 0.0), d


def _two_groups(values: np.ndarray, seed: int) -> tuple[float | None, float]:
    # where values become likelier to belong to the upper of two Gaussian components, when the two
    # are separate groups (Ashman's D > 2); None when they form one group
    values = values[np.isfinite(values)]
    if len(values) < 10:
        return None, 0.0
    mixture = GaussianMixture(2, random_state=seed, n_init=3).fit(values[:, None])
    mean = mixture.means_.ravel()
    var = mixture.covariances_.ravel()
    d = float(np.sqrt(2) * abs(mean[0] - mean[1]) / np.sqrt(var[0] + var[1]))
    if d <= _SEPARATION:
        return None, d
    low, high = int(np.argmin(mean)), int(np.argmax(mean))
    grid = np.linspace(mean[low], mean[high], 1024)  # the decision boundary lies between the two means
    upper = mixture.predict_proba(grid[:, None])[:, high] > 0.5
    return float(grid[np.argmax(upper)]), d


def gene_modules(
    adata: AnnData,
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    min_norm: float | None = None,
    min_centrality: float | None = None,
    min_size: int = 5,
    seed: int = 0,
    key: str = KEYS.LOADINGS,
    key_added: str | None = None,
) -> pd.Series:
    """Gene modules: Leiden clustering of the genes' k-NN graph in the loading space.

    Genes that no latent programme explains (centrality or loading norm at most the thresholds
    below) stay unassigned; the others are linked to their ``n_neighbors`` nearest genes
    (Euclidean, as `neighbors`) by scanpy's ``pp.neighbors`` and clustered by scanpy's
    ``tl.leiden`` (igraph). Modules of fewer than ``min_size`` genes are unassigned too.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``; reads ``adata.varm[key]``.
    resolution
        Leiden resolution: higher gives more, smaller modules.
    n_neighbors
        Neighbours per gene in the k-NN graph.
    min_norm, min_centrality
        A gene whose loading norm, or whose centrality (``adata.var["sivae_centrality"]``, how
        closely its reconstruction follows it), is at or below these is left unassigned, as
        explained by no latent programme. None for both (default): chosen from the data, on the
        centrality when ``adata.var`` has it (a two-group split as `origin_threshold` makes, on
        the centralities themselves; none when they form one group), else on the log norms by
        `origin_threshold`. The centrality is the default because it measures "explained by no
        programme" directly: on the simulated network (5,000 cells, K=8, default training) the
        50 isolated genes' centrality is at most 0.05 against at least 0.59 for every community gene,
        while their loading norms (1.0-1.9) overlap the community genes' (1.3-3.7), and a
        split of the norms cut two communities away with them (``benchmarks/programs.py``, part
        modules). 0 for both: every gene is clustered.
    min_size
        Smallest module kept.
    seed
        Seed of the neighbour search, the Leiden run and the mixture.
    key
        The gene embedding in ``adata.varm`` (default ``"sivae_loadings"``).
    key_added
        ``adata.var`` column of the modules and ``adata.uns`` key of the parameters; None:
        ``"sivae_module"``.

    Returns
    -------
    pandas.Series
        Categorical module per gene (``M1`` the largest, ``M2``, ...), NaN for unassigned genes,
        indexed by ``adata.var_names``. Also written to ``adata.var[key_added]``; the parameters,
        the thresholds used (NaN: none) and Ashman's D of the split go to ``adata.uns[key_added]``.
    """
    loadings = _loadings(adata, key)
    resolution = _params.positive(resolution, "resolution")
    n_neighbors = _params.count(n_neighbors, "n_neighbors")
    min_size = _params.count(min_size, "min_size")
    seed = _params.seed(seed)
    norms = np.linalg.norm(loadings, axis=1)
    column = key.replace("_loadings", "_centrality")
    centrality = adata.var[column].to_numpy(np.float64) if column in adata.var else None
    norm_threshold, centrality_threshold, separation = 0.0, None, float("nan")
    if min_norm is None and min_centrality is None:
        if centrality is not None:
            centrality_threshold, separation = _two_groups(centrality, seed)
        else:
            norm_threshold, separation = origin_threshold(norms, seed=seed)
    else:
        norm_threshold = 0.0 if min_norm is None else _params.non_negative(min_norm, "min_norm")
        centrality_threshold = None if min_centrality is None else _params.number(min_centrality, "min_centrality")
    explained = norms > norm_threshold
    if centrality_threshold is not None:
        if centrality is None:
            raise InputError(f"min_centrality needs adata.var[{column!r}]; train a model on this AnnData first "
                             "or pass min_norm instead")
        explained &= np.nan_to_num(centrality, nan=-np.inf) > centrality_threshold
    kept = np.flatnonzero(explained)
    if len(kept) <= n_neighbors:
        raise InputError(f"only {len(kept)} genes pass min_norm / min_centrality, too few for "
                         f"n_neighbors={n_neighbors}; lower those thresholds or n_neighbors")
    labels = np.full(adata.n_vars, None, dtype=object)
    labels[kept] = _leiden(loadings[kept], n_neighbors, resolution, seed)
    modules = _named(labels, min_size)
    modules.index = adata.var_names.copy()
    out_key = KEYS.MODULE if key_added is None else key_added
    adata.var[out_key] = modules.array  # the Categorical itself: M1, M2, ..., M10 in that order
    adata.uns[out_key] = {
        "params": {"resolution": resolution, "n_neighbors": n_neighbors, "min_size": min_size, "seed": seed,
                   "key": key, "min_norm": "auto" if min_norm is None and min_centrality is None else norm_threshold,
                   "min_centrality": "auto" if min_norm is None and min_centrality is None
                   else (np.nan if centrality_threshold is None else centrality_threshold)},
        "norm_threshold": float(norm_threshold),
        "centrality_threshold": np.nan if centrality_threshold is None else float(centrality_threshold),
        "ashman_d": separation,
        "n_unassigned": int(modules.isna().sum()), "n_modules": int(len(modules.cat.categories)),
    }
    return modules


def unassigned_rule(info: Mapping[str, Any]) -> str:
    """What left genes out of the modules, in words, from ``uns["sivae_module"]`` (results from
    before the centrality rule hold only the norm threshold)."""
    rules = []
    if np.isfinite(float(info.get("centrality_threshold", np.nan))):
        rules.append(f"centrality at most {float(info['centrality_threshold']):.3g}")
    if float(info.get("norm_threshold", 0.0) or 0.0) > 0:
        rules.append(f"loading norm at most {float(info['norm_threshold']):.3g}")
    return " or ".join(rules) or "no threshold"


def _loadings(adata: Any, key: str) -> np.ndarray:
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData; got {type(adata).__name__}")
    if key not in adata.varm:
        raise InputError(f"adata.varm has no {key!r}; train a model on this AnnData first (model.train())")
    check_matrix(adata.varm[key], f"adata.varm[{key!r}]")
    loadings = np.asarray(adata.varm[key], dtype=np.float64)
    if loadings.ndim != 2 or not np.isfinite(loadings).all():
        raise InputError(f"adata.varm[{key!r}] must be a finite genes x dims matrix; retrain the model")
    return loadings


def _leiden(points: np.ndarray, n_neighbors: int, resolution: float, seed: int) -> np.ndarray:
    import scanpy as sc

    genes = AnnData(points.astype(np.float32), obs=pd.DataFrame(index=[str(i) for i in range(len(points))]))
    # the Gaussian kernel: the UMAP kernel, scanpy's default, spends ~5 s compiling (numba) in every new process
    sc.pp.neighbors(genes, n_neighbors=n_neighbors, use_rep="X", metric="euclidean", method="gauss",
                    random_state=seed)
    sc.tl.leiden(genes, resolution=resolution, flavor="igraph", n_iterations=-1, directed=False,
                 random_state=seed)
    return genes.obs["leiden"].astype(str).to_numpy()


def _named(labels: np.ndarray, min_size: int) -> pd.Series:
    # M1 the largest module, then by size; modules under min_size unassigned (NaN)
    counts = pd.Series(labels).dropna().value_counts(sort=False)
    big = counts[counts >= min_size].sort_values(ascending=False, kind="stable")
    names = {label: f"M{i}" for i, label in enumerate(big.index, start=1)}
    named = [names.get(label) if label is not None else None for label in labels]
    return pd.Series(pd.Categorical(named, categories=list(names.values())))


def module_scores(adata: AnnData, *, layer: str | None = None, key: str = KEYS.MODULE, ctrl_size: int = 50,
                  seed: int = 0, key_added: str | None = None) -> pd.DataFrame:
    """Each module's activity per cell: scanpy's ``tl.score_genes`` on the module's genes.

    The score of a cell is the mean expression of the module's genes minus that of control
    genes drawn from the same expression bins (Satija et al. 2015, as scanpy computes it).

    Parameters
    ----------
    adata
        AnnData after `gene_modules`; reads ``adata.var[key]`` and ``adata.X`` (or ``layer``).
    layer
        Score ``adata.layers[layer]`` instead of ``adata.X`` (e.g. log-normalised values).
    key
        The ``adata.var`` column of the modules (default ``"sivae_module"``).
    ctrl_size
        Control genes per expression bin.
    seed
        Seed of the control-gene draw.
    key_added
        ``adata.obsm`` key of the scores; None: ``"sivae_module_scores"``.

    Returns
    -------
    pandas.DataFrame
        Cells x modules, indexed by ``adata.obs_names``; also written to ``adata.obsm[key_added]``.
    """
    import scanpy as sc

    if not isinstance(adata, AnnData):
        raise InputError(f"module_scores expects an AnnData; got {type(adata).__name__}")
    if key not in adata.var:
        raise InputError(f"adata.var has no {key!r} column; run sivae.tl.gene_modules first")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata.layers has no {layer!r}; choose one of {sorted(adata.layers)} or leave layer=None")
    modules = adata.var[key].astype("category")
    if modules.isna().all():
        raise InputError(f"adata.var[{key!r}] assigns no gene to a module; rerun sivae.tl.gene_modules")
    check_matrix(adata.X if layer is None else adata.layers[layer], "adata.X" if layer is None else f"layer {layer!r}")
    cells = AnnData(adata.X if layer is None else adata.layers[layer], obs=pd.DataFrame(index=adata.obs_names),
                    var=pd.DataFrame(index=adata.var_names))
    scores = {}
    for name in modules.cat.categories:
        genes = list(adata.var_names[(modules == name).to_numpy()])
        sc.tl.score_genes(cells, genes, ctrl_size=_params.count(ctrl_size, "ctrl_size"), score_name="score",
                          random_state=_params.seed(seed))
        scores[str(name)] = cells.obs["score"].to_numpy(dtype=np.float64)
    table = pd.DataFrame(scores, index=adata.obs_names)
    adata.obsm[KEYS.MODULE_SCORES if key_added is None else key_added] = table
    return table
