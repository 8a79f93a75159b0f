"""Gene networks inferred from expression: CLR, MRNET, ARACNE and GRNBoost2 (the paper's baselines).

All four output a genes x genes matrix of edge weights, larger meaning a more confident edge.
CLR, MRNET and ARACNE work on a mutual-information (MI) matrix; the estimator here is the
Gaussian copula: each gene's values are replaced by normal scores of their ranks and
MI = -log(1 - r^2) / 2 from the Pearson correlation r of the scores (nats). It is exact for
bivariate Gaussians, invariant to monotone transforms of each gene, computed for all pairs by one
matrix product, and a lower bound of the MI of other dependences (Ince et al. 2017, Hum Brain
Mapp). The published tools (minet) default to a binned plug-in estimator instead, which is
biased upward at small cell numbers and costs one histogram per pair.

GRNBoost2 (Moerman et al. 2019) fits, per target gene, gradient-boosted trees on the other genes
(or on candidate regulators) and uses their importances as edge weights. It is re-implemented
here on scikit-learn because arboreto 0.1.6, the package that ships it, fails with dask releases
since 2024 (arboreto issue #42, open); the algorithm, its settings and its early-stopping rule
follow arboreto's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from joblib import Parallel, delayed
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.ensemble import GradientBoostingRegressor

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.validate import check_matrix

METHODS = ("clr", "mrnet", "aracne", "grnboost2")
# float64 genes x genes matrices each method holds at once (MI, z-scores, scores, result, ...)
_SQUARE_MATRICES = {"clr": 4, "mrnet": 6, "aracne": 5, "grnboost2": 2}
_ARACNE_CHUNK_BYTES = 256 * 2**20  # one (rows x genes x genes) block of the triplet test


# -- the mutual-information matrix ----------------------------------------------------------------
def copula_normal_scores(X: np.ndarray) -> np.ndarray:
    """Normal scores of each column's ranks (ties share their mean rank), cells x genes."""
    n = X.shape[0]
    ranks = rankdata(X, axis=0)  # (C, F), average ranks for ties
    return ndtri(ranks / (n + 1.0))


def mutual_information(X: Any) -> np.ndarray:
    """Gaussian-copula mutual information between every pair of columns of ``X`` (nats).

    Parameters
    ----------
    X
        Cells x genes matrix (dense or sparse).

    Returns
    -------
    numpy.ndarray
        Genes x genes symmetric matrix, MI = -log(1 - r^2) / 2 with r the Pearson correlation
        of the columns' normal scores; zero on the diagonal and for constant genes.
    """
    X = _dense(X, "X")
    scores = copula_normal_scores(X)
    scores -= scores.mean(0)
    norm = np.linalg.norm(scores, axis=0)
    norm[norm == 0] = np.inf  # constant genes: correlation 0, MI 0
    scores /= norm
    r = scores.T @ scores  # (F, F) Pearson correlation of the normal scores
    np.clip(r * r, 0.0, 1.0 - 1e-12, out=r)
    mi = -0.5 * np.log1p(-r)
    np.fill_diagonal(mi, 0.0)
    return mi


# -- CLR, MRNET, ARACNE on an MI matrix --------------------------------------------------------------
def _check_mi(mi: Any) -> np.ndarray:
    try:
        mi = np.array(mi, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"expected a numeric genes x genes MI matrix; got {type(mi).__name__}") from None
    if mi.ndim != 2 or mi.shape[0] != mi.shape[1] or mi.shape[0] < 2:
        raise InputError(f"expected a square genes x genes MI matrix with at least 2 genes; got shape {mi.shape}")
    if not np.isfinite(mi).all():
        raise InputError("the MI matrix holds NaN or infinite values; compute it from finite data")
    np.fill_diagonal(mi, 0.0)
    return mi


def clr(mi: Any) -> np.ndarray:
    """Context likelihood of relatedness (Faith et al. 2007), as minet computes it.

    Each MI value is z-scored against the MI of gene i with all other genes (z_i) and of gene j
    (z_j), negative scores set to 0, and w_ij = sqrt(z_i^2 + z_j^2). The diagonal is left out
    of the means and standard deviations and set to 0.
    """
    mi = _check_mi(mi)
    n = mi.shape[0]
    off = ~np.eye(n, dtype=bool)
    mean = mi.sum(1) / (n - 1)
    sd = np.sqrt(((mi - mean[:, None]) ** 2 * off).sum(1) / (n - 1))
    sd[sd == 0] = np.inf
    z = np.maximum((mi - mean[:, None]) / sd[:, None], 0.0)  # z[i, j]: MI_ij against gene i's
    w = np.sqrt(z**2 + z.T**2)
    np.fill_diagonal(w, 0.0)
    return w


def mrnet(mi: Any) -> np.ndarray:
    """Minimum-redundancy maximum-relevance network (Meyer et al. 2007), as minet computes it.

    For each target Y, genes are selected greedily: first the one of largest MI with Y, then
    each time the gene X maximising MI(X;Y) - mean over selected S of MI(X;S), until that score
    is no longer positive. w_ij is the larger of i's score when selected for j and j's for i.
    All targets advance together, one selection step at a time (F steps of F x F work).
    """
    mi = _check_mi(mi)
    n = mi.shape[0]
    rows = np.arange(n)
    score = np.zeros((n, n))  # score[t, x]: x's mRMR score when selected for target t
    selected = np.eye(n, dtype=bool)  # a target never selects itself
    redundancy = np.zeros((n, n))  # sum over selected S of MI(x, S), per target
    active = np.ones(n, dtype=bool)
    for step in range(n - 1):
        gain = mi - redundancy / max(step, 1)
        gain[selected] = -np.inf
        best = gain.argmax(1)  # (F,) next gene per target
        value = gain[rows, best]
        active &= value > 0
        if not active.any():
            break
        t = rows[active]
        score[t, best[active]] = value[active]
        selected[t, best[active]] = True
        redundancy[t] += mi[best[active]]  # MI of every gene with the newly selected one
    w = np.maximum(score, score.T)
    np.fill_diagonal(w, 0.0)
    return w


def aracne(mi: Any, *, eps: float = 0.0) -> np.ndarray:
    """Algorithm for the reconstruction of accurate cellular networks (Margolin et al. 2006).

    Data processing inequality: in every triplet (i, j, k), the edge i-j is removed when
    MI_ij < min(MI_ik, MI_kj) - eps; the remaining edges keep their MI. The triplet test is
    a (max, min) matrix product computed in blocks of rows with torch.
    """
    eps = _params.non_negative(eps, "eps")
    mi = _check_mi(mi)
    n = mi.shape[0]
    m = torch.from_numpy(mi.astype(np.float32))
    weakest_path = torch.empty_like(m)  # max over k of min(MI_ik, MI_kj)
    rows_per_block = max(1, _ARACNE_CHUNK_BYTES // (4 * n * n))
    for s in range(0, n, rows_per_block):
        block = m[s : s + rows_per_block]  # (b, F)
        weakest_path[s : s + rows_per_block] = torch.minimum(block[:, :, None], m[None]).amax(1)
    keep = (m >= weakest_path - eps).numpy()  # both float32: a tie compares equal
    w = np.where(keep, mi, 0.0)
    np.fill_diagonal(w, 0.0)
    return w


# -- GRNBoost2 --------------------------------------------------------------------------------------
class _OutOfBagStop:
    """arboreto's early-stopping rule: stop once the mean out-of-bag improvement of the last
    ``window`` trees is negative (our implementation, for GradientBoostingRegressor's monitor)."""

    def __init__(self, window: int = 25) -> None:
        self.window = window

    def __call__(self, i: int, regressor: GradientBoostingRegressor, _: dict[str, Any]) -> bool:
        if i < self.window:
            return False
        return bool(np.mean(regressor.oob_improvement_[i - self.window + 1 : i + 1]) < 0)


def _boost_one(
    X: np.ndarray, target: int, regulators: np.ndarray, settings: dict[str, Any], seed: int
) -> np.ndarray:
    # importances of the regulators for one target, scaled by the trees grown (as arboreto does)
    inputs = regulators[regulators != target]
    regressor = GradientBoostingRegressor(random_state=(seed + target) % 2**32, **settings)
    monitor = _OutOfBagStop() if settings["subsample"] < 1 else None  # no out-of-bag cells otherwise
    regressor.fit(X[:, inputs], X[:, target], monitor=monitor)
    weights = np.zeros(X.shape[1])
    weights[inputs] = regressor.feature_importances_ * regressor.n_estimators_
    return weights


def grnboost2(
    X: Any,
    *,
    regulators: Sequence[int] | None = None,
    learning_rate: float = 0.01,
    max_trees: int = 5000,
    max_features: float = 0.1,
    subsample: float = 0.9,
    max_depth: int = 3,
    n_jobs: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """GRNBoost2 on a cells x genes matrix: per target, boosted trees on the candidate regulators.

    Settings default to arboreto's GRNBoost2 (learning rate 0.01, up to 5,000 trees of depth 3,
    10% of the regulators per split search, 90% of the cells per tree, stopping when the mean
    out-of-bag improvement of the last 25 trees turns negative). Targets run in parallel with
    joblib. Its cost grows with cells x regulators x trees per target, times targets: give a
    list of candidate regulators (e.g. transcription factors) or fewer cells on large data.

    Returns
    -------
    numpy.ndarray
        Regulators x targets importances (row i, column j: i's importance for predicting j),
        zero for genes that are not candidate regulators and on the diagonal.
    """
    settings = check_grnboost2_options(dict(learning_rate=learning_rate, max_trees=max_trees,
                                            max_features=max_features, subsample=subsample, max_depth=max_depth))
    n_jobs, seed = _params.jobs(n_jobs), _params.seed(seed)
    X = _dense(X, "X")
    n_genes = X.shape[1]
    candidates = np.arange(n_genes) if regulators is None else np.unique(np.asarray(regulators, dtype=int))
    if len(candidates) < 1 or candidates.min() < 0 or candidates.max() >= n_genes:
        raise InputError(f"regulators must index the {n_genes} genes; got {len(candidates)} indices out of range or none")
    settings["n_estimators"] = settings.pop("max_trees")
    columns = Parallel(n_jobs=n_jobs if n_jobs == -1 else min(n_jobs, n_genes))(
        delayed(_boost_one)(X, t, candidates, settings, seed) for t in range(n_genes)
    )
    return np.stack(columns, axis=1)  # (regulators, targets)


# -- the scanpy-shaped entry point ----------------------------------------------------------------
def grn(
    adata: AnnData,
    *,
    method: str = "clr",
    layer: str | None = None,
    regulators: Sequence[str] | None = None,
    n_jobs: int = 1,
    seed: int = 0,
    max_memory: float | None = None,
    key_added: str | None = None,
    **grnboost2_options: Any,
) -> pd.DataFrame:
    """Infer a gene network from the cells of ``adata`` with CLR, MRNET, ARACNE or GRNBoost2.

    siVAE-GRN is this function run on ``model.sample(...)``, cells drawn from a trained model.

    Parameters
    ----------
    adata
        Cells x genes; reads ``adata.X`` or ``adata.layers[layer]``.
    method
        "clr", "mrnet", "aracne" (on the Gaussian-copula MI matrix) or "grnboost2".
    regulators
        GRNBoost2 only: names of the candidate regulators (default all genes).
    n_jobs, seed
        GRNBoost2 only: parallel jobs over targets (joblib) and the trees' seed.
    max_memory
        Bytes the computation may use; default what the operating system reports available.
        A request that needs more is refused before any work, with the amount it needs.
    key_added
        Where the weights go in ``adata.varp``; default ``"sivae_grn_<method>"``.
    grnboost2_options
        Passed to :func:`grnboost2` (learning_rate, max_trees, max_features, subsample, max_depth).

    Returns
    -------
    pandas.DataFrame
        Genes x genes edge weights indexed by ``adata.var_names`` (larger: stronger edge;
        symmetric except GRNBoost2's, whose row i column j is i's importance for target j).
        Also written to ``adata.varp[key_added]``.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"grn expects an AnnData; got {type(adata).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if (grnboost2_options or regulators is not None) and method != "grnboost2":
        extra = sorted(grnboost2_options) + (["regulators"] if regulators is not None else [])
        raise InputError(f"options {extra} apply to method 'grnboost2' only")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata.layers has no {layer!r}; choose one of {list(adata.layers)} or None for adata.X")
    if method == "grnboost2":
        check_grnboost2_options(grnboost2_options)
        n_jobs, seed = _params.jobs(n_jobs), _params.seed(seed)
    n_cells, n_genes = adata.shape
    if n_genes < 2 or n_cells < 3:
        raise InputError(f"a network needs at least 2 genes and 3 cells; got {n_cells} x {n_genes}")
    check_memory(n_cells, n_genes, method=method, max_memory=max_memory)
    X = _dense(adata.X if layer is None else adata.layers[layer], "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    if method == "grnboost2":
        idx = None
        if regulators is not None:
            from .neighborhoods import gene_indices

            idx = gene_indices(adata.var_names, list(regulators))
        weights = grnboost2(X, regulators=idx, n_jobs=n_jobs, seed=seed, **grnboost2_options)
    else:
        mi = mutual_information(X)
        del X
        weights = {"clr": clr, "mrnet": mrnet, "aracne": aracne}[method](mi)
    adata.varp[key_added or f"{KEYS.GRN}_{method}"] = weights
    return pd.DataFrame(weights, index=adata.var_names.copy(), columns=adata.var_names.copy())


def check_memory(n_cells: int, n_genes: int, *, method: str, max_memory: float | None = None) -> None:
    """Refuse a network that would not fit in memory, saying how much it needs."""
    need = _SQUARE_MATRICES[method] * 8.0 * n_genes**2 + 2 * 8.0 * n_cells * n_genes
    if max_memory is not None:
        max_memory = _params.positive(max_memory, "max_memory")
    _params.check_memory(need, f"a {method} network on {n_genes:,} genes x {n_cells:,} cells",
                         "restrict adata to fewer genes (e.g. highly variable ones)", available=max_memory)


def check_grnboost2_options(options: dict[str, Any]) -> dict[str, Any]:
    """GRNBoost2's settings, checked before any tree grows (scikit-learn's own errors would
    surface from inside the per-target loop); unknown names refused."""
    checks = {"learning_rate": _params.learning_rate, "max_trees": _params.count,
              "max_features": _params.fraction, "subsample": _params.fraction, "max_depth": _params.count}
    unknown = sorted(set(options) - set(checks))
    if unknown:
        raise InputError(f"unknown grnboost2 options {unknown}; choose from {sorted(checks)}")
    return {name: checks[name](value, name) for name, value in options.items()}


def _dense(X: Any, name: str) -> np.ndarray:
    # float64 dense copy, refusing non-finite values
    check_matrix(X, name)  # text, complex or a corrupt sparse matrix, before scipy touches it
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.array(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"{name} must be a 2-D cells x genes matrix; got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError(f"{name} holds NaN or infinite values; remove or impute them first")
    return X
