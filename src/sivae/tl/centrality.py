"""Gene hubs from a trained model: the features it reconstructs best (paper, Methods); degree
centrality of an inferred network; and how stable a model's hub ranking is (bootstrap over cells).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from ._inputs import check_model_input


def hubs(
    adata: AnnData,
    *,
    n: int = 20,
    key: str = KEYS.CENTRALITY,
    stability: Any = None,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.Series | pd.DataFrame:
    """The ``n`` most central features, ranked by per-feature reconstruction accuracy.

    A hub's expression pattern is what the model keeps to rebuild its many neighbours, so it is
    reconstructed best; no gene network has to be inferred.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``. Reads ``adata.var[key]``; with ``stability``, also
        ``adata.var["sivae_centrality_rank_low"]`` and ``["sivae_centrality_rank_high"]``.
    n
        How many features to return; all of them if there are fewer.
    key
        Column of ``adata.var`` holding the centrality (default ``"sivae_centrality"``).
    stability
        How stable each hub's rank is, from `centrality_ci` (a bootstrap over cells, no
        retraining). None (default): not asked. The trained model: run `centrality_ci` on the
        training cells of ``adata`` (``obs["sivae_split"] == "train"``, where the centrality was
        measured; all cells when that column is absent) and write its rank columns into
        ``adata.var``. True: read the rank columns an earlier `centrality_ci` wrote.
    n_boot, seed
        Bootstrap replicates and their seed, when ``stability`` is a model.

    Returns
    -------
    pandas.Series or pandas.DataFrame
        Without ``stability``: the centrality of the top ``n`` features, highest first (ties in
        feature order), indexed by ``adata.var_names`` and named ``key``; features whose
        centrality is NaN (constant on the cells measured) are left out. With it: a DataFrame of
        the same features with columns ``key``, ``rank_low`` and ``rank_high`` (the central 95%
        of the bootstrap ranks, 1 = most central).
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"hubs expects an AnnData; got {type(adata).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be an integer >= 1; got {n!r}")
    if key not in adata.var.columns:
        raise InputError(f"adata.var has no {key!r} column; run model.train() first")
    scores = pd.Series(pd.to_numeric(adata.var[key], errors="coerce"), index=adata.var_names)
    if scores.isna().all():
        raise InputError(f"adata.var[{key!r}] holds no numeric values; run model.train() first")
    ranked = scores.dropna().sort_values(ascending=False, kind="stable").iloc[: int(n)].rename(key)
    if stability is None or stability is False:
        return ranked
    bounds = _rank_interval(adata, stability, n_boot, seed)
    return pd.concat([ranked, bounds.loc[ranked.index]], axis=1)


def _rank_interval(adata: AnnData, stability: Any, n_boot: int, seed: int) -> pd.DataFrame:
    # (rank_low, rank_high) per feature of adata: from adata.var (True) or a fresh bootstrap (a model)
    columns = {"rank_low": KEYS.CENTRALITY_RANK_LOW, "rank_high": KEYS.CENTRALITY_RANK_HIGH}
    if stability is not True:
        if not getattr(stability, "is_trained", False):
            raise InputError(f"stability must be None, True or a trained model; got {type(stability).__name__}")
        train = adata.obs[KEYS.SPLIT].astype(str).to_numpy() == "train" if KEYS.SPLIT in adata.obs else slice(None)
        ci = centrality_ci(stability, adata[train].copy(), n_boot=n_boot, seed=seed)
        for column, var_key in columns.items():
            adata.var[var_key] = ci[column].reindex(adata.var_names).to_numpy()
    missing = [k for k in columns.values() if k not in adata.var.columns]
    if missing:
        raise InputError(f"adata.var has no {missing[0]!r} column; pass stability=model (or run "
                         "sivae.tl.centrality_ci(model, adata) first)")
    return pd.DataFrame({c: pd.to_numeric(adata.var[k], errors="coerce").to_numpy() for c, k in columns.items()},
                        index=adata.var_names)


def degree_centrality(weights: Any, *, names: Any = None) -> pd.Series:
    """Degree centrality of a weighted network: each gene's mean edge weight to all other genes.

    The paper's centrality for GRN methods (Methods, "Estimating gene centrality using GCN
    inference methods"). A directed network (GRNBoost2) is first made symmetric by keeping the
    larger weight of i -> j and j -> i.

    Parameters
    ----------
    weights
        Genes x genes matrix (a DataFrame from ``sivae.tl.grn``, or an array).
    names
        Gene names for an array; a DataFrame's index otherwise.

    Returns
    -------
    pandas.Series
        Mean weight per gene, indexed by gene name, named "degree_centrality".
    """
    if isinstance(weights, pd.DataFrame):
        names = weights.index if names is None else names
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"weights must be a numeric genes x genes matrix; got {type(weights).__name__}") from err
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise InputError(f"weights must be a square genes x genes matrix with at least 2 genes; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("weights hold NaN or infinite values; fix the network first")
    n = w.shape[0]
    w = np.maximum(w, w.T)
    degree = (w.sum(1) - np.diag(w)) / (n - 1)
    index = pd.Index(np.asarray(names, dtype=str)) if names is not None else pd.RangeIndex(n)
    if len(index) != n:
        raise InputError(f"names has {len(index)} entries but the network has {n} genes")
    return pd.Series(degree, index=index, name="degree_centrality")


def centrality_ci(
    model: Any,
    adata: AnnData | None = None,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Bootstrap over cells of siVAE's centrality ranks, without retraining: which hubs are stable.

    The reconstruction of every cell is computed once; each replicate reweights the cells with
    independent Poisson(1) counts (the Poisson bootstrap, which streams over cells in chunks and
    so needs memory for n_boot x genes only) and recomputes each gene's centrality (the
    correlation of its reconstruction with the data, `sivae.models.accuracy.accuracy_from_sums`) and its
    rank. The interval is the central ``level`` range of the replicates' ranks.

    Parameters
    ----------
    model
        A trained model (``sivae.SIVAE``, ``VAE`` or ``LDVAE``).
    adata
        Cells to score (the model's features, preprocessed like its training data); default the
        model's own training cells, as ``adata.var["sivae_centrality"]`` was computed.
    n_boot
        Bootstrap replicates.
    level
        Coverage of the rank interval.
    seed
        Seed of the replicate weights.
    key_added
        Prefix of the ``var`` columns written; None: ``"sivae_centrality"`` (the key rule of
        ``sivae.tl``).

    Returns
    -------
    pandas.DataFrame
        Per gene (indexed by the model's features): ``centrality`` (on all the cells scored),
        ``rank`` (1 = most central), ``rank_low`` and ``rank_high`` (the interval); a feature
        constant on the cells scored has a NaN centrality and ranks last. The ranks
        are also written to ``var["<key_added>_rank"]``, ``var["<key_added>_rank_low"]`` and
        ``var["<key_added>_rank_high"]`` of ``adata`` (or of the model's AnnData).
    """
    if not getattr(model, "is_trained", False):
        raise InputError("centrality_ci needs a trained model; call model.train() first")
    n_boot = _params.integer(n_boot, "n_boot", minimum=2)
    level = _params.fraction(level, "level", closed_high=False)
    seed = _params.seed(seed)
    # the replicates' sums, accuracies and ranks (about 8 x n_boot x genes) and one chunk's weights, float64
    _params.check_memory(8.0 * n_boot * (8 * len(model.feature_names) + 4096), f"{n_boot:,} bootstrap replicates",
                         "use fewer replicates (the default is 200)")
    if adata is None:
        model.require_data("centrality_ci() without cells")
    else:
        check_model_input(model, adata, "centrality_ci")
    from sivae.models.accuracy import CENTRALITY_SUMS, accuracy_from_sums, centrality_terms

    rng = np.random.default_rng(seed)
    shape = (len(CENTRALITY_SUMS), len(model.feature_names))
    full = np.zeros(shape)  # the centrality sums on all cells
    boot = np.zeros((n_boot, *shape))  # and on each Poisson-weighted replicate
    n_cells, boot_n = 0, np.zeros((n_boot, 1))
    for truth, pred in model.reconstructions(adata):
        terms = centrality_terms(truth, pred).cpu().numpy()  # (B, 5, F)
        weights = rng.poisson(1.0, size=(n_boot, truth.shape[0])).astype(np.float64)  # (n_boot, B)
        full += terms.sum(0)
        boot += np.einsum("rb,bsf->rsf", weights, terms)
        n_cells += truth.shape[0]
        boot_n += weights.sum(1, keepdims=True)
    centrality = accuracy_from_sums(full, n=max(n_cells, 1))
    ranks = _ranks(accuracy_from_sums(boot, n=np.maximum(boot_n, 1.0)))  # (n_boot, F); a replicate that drew no cell: no NaN
    tail = 100 * (1 - level) / 2
    result = pd.DataFrame({
        "centrality": centrality,
        "rank": _ranks(centrality[None])[0],
        "rank_low": np.percentile(ranks, tail, axis=0, method="lower"),
        "rank_high": np.percentile(ranks, 100 - tail, axis=0, method="higher"),
    }, index=pd.Index(model.feature_names))
    target = model.adata if adata is None else adata
    prefix = KEYS.CENTRALITY if key_added is None else key_added  # default: KEYS.CENTRALITY_RANK, ...
    for column in ("rank", "rank_low", "rank_high"):
        target.var[f"{prefix}_{column}"] = result[column].reindex(target.var_names).to_numpy()
    return result


def _ranks(scores: np.ndarray) -> np.ndarray:
    # rank 1 = highest score, per row
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None].repeat(len(scores), 0), axis=1)
    return ranks

