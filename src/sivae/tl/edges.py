"""Edge recovery of an inferred gene network against known edges (BEELINE's scores), and its edge list.

BEELINE (Pratapa et al. 2020, Nat Methods) scores a network by AUROC, by the AUPRC ratio (area
under the precision-recall curve over that of a random predictor, which equals the edge density),
and by the early precision ratio (precision among the top-k edges, k = the number of true edges,
over the edge density).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from sivae._errors import InputError


def edge_recovery(weights: Any, true_edges: Any, *, directed: bool = False) -> dict[str, float]:
    """AUROC, AUPRC ratio and early precision ratio of ``weights`` against ``true_edges``.

    Parameters
    ----------
    weights
        Genes x genes edge weights, larger = more confident (a DataFrame from ``sivae.tl.grn``
        indexed by gene names, or an array whose edges are then given as indices).
    true_edges
        E x 2 gene names (or indices): the known edges, e.g.
        ``adata.uns["simulated_network"]["edges"]``.
    directed
        False (default): pairs are unordered, scored by the larger of w_ij and w_ji, and an
        edge listed either way is true. True: ordered pairs i -> j, self-pairs excluded.

    Returns
    -------
    dict
        ``auroc``, ``auprc``, ``auprc_ratio``, ``early_precision``, ``early_precision_ratio``,
        ``density`` (true edges over candidate pairs), ``n_edges``.
    """
    w, names = _weights(weights)
    n = w.shape[0]
    pairs = _edge_positions(true_edges, names, n)
    truth = np.zeros((n, n), dtype=bool)
    truth[pairs[:, 0], pairs[:, 1]] = True
    if directed:
        mask = ~np.eye(n, dtype=bool)
        scores, labels = w[mask], truth[mask]
    else:
        upper = np.triu_indices(n, k=1)
        scores, labels = np.maximum(w, w.T)[upper], (truth | truth.T)[upper]
    n_true = int(labels.sum())
    if n_true == 0 or n_true == len(labels):
        raise InputError("true_edges must contain some but not all gene pairs; check the edge list")
    density = n_true / len(labels)
    auprc = float(average_precision_score(labels, scores))
    top = np.argsort(-scores, kind="stable")[:n_true]
    early = float(labels[top].mean())
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": auprc,
        "auprc_ratio": auprc / density,
        "early_precision": early,
        "early_precision_ratio": early / density,
        "density": density,
        "n_edges": n_true,
    }


def _weights(weights: Any) -> tuple[np.ndarray, pd.Index | None]:
    names = None
    if isinstance(weights, pd.DataFrame):
        if not weights.columns.equals(weights.index):
            raise InputError("weights must have the same genes, in the same order, as rows and columns")
        names = pd.Index(weights.index.astype(str))
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"weights must be a numeric genes x genes matrix; got {type(weights).__name__}") from err
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise InputError(f"weights must be a square genes x genes matrix; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("weights hold NaN or infinite values; fix the network first")
    return w, names


def _edge_positions(true_edges: Any, names: pd.Index | None, n: int) -> np.ndarray:
    edges = np.asarray(true_edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or len(edges) == 0:
        raise InputError(f"true_edges must be an E x 2 list of gene pairs with E >= 1; got shape {edges.shape}")
    if names is not None and edges.dtype.kind in "USO":
        from .neighborhoods import gene_indices

        return gene_indices(names, edges.astype(str).ravel()).reshape(-1, 2)
    if edges.dtype.kind not in "iu" or edges.min() < 0 or edges.max() >= n:
        raise InputError(f"true_edges must be gene names (with a DataFrame of weights) or indices below {n}")
    return edges.astype(np.int64)


def edge_list(weights: pd.DataFrame, *, directed: bool, top: int | None = None) -> pd.DataFrame:
    """The nonzero edges of a gene network as a table, strongest first (what ``sivae grn`` writes).

    Parameters
    ----------
    weights
        Genes x genes weights indexed by gene name, e.g. from :func:`sivae.tl.grn`.
    directed
        List every nonzero i -> j (GRNBoost2); False: each pair once, from the upper triangle
        (CLR, MRNET, ARACNE, whose matrices are symmetric).
    top
        Keep only the ``top`` strongest edges; None: all of them.

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``target``, ``weight``, by decreasing weight (ties in matrix order).
    """
    if not isinstance(weights, pd.DataFrame):
        raise InputError(f"weights must be a genes x genes DataFrame indexed by gene name, e.g. from "
                         f"sivae.tl.grn; got {type(weights).__name__}")
    w = weights.to_numpy()
    if directed:
        rows, cols = np.nonzero(w)
    else:
        rows, cols = np.nonzero(np.triu(w, k=1))
    values = w[rows, cols]
    order = np.argsort(-values, kind="stable")[:top]
    names = weights.index.to_numpy(dtype=str)
    return pd.DataFrame({"source": names[rows[order]], "target": names[cols[order]], "weight": values[order]})
