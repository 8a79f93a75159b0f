"""How far interpretations agree: per-dimension |Spearman| between feature loadings (paper, Fig. 3a).

Each interpretation is a features x K matrix: siVAE's loadings, a summary of neural-network
attributions or of Gene Relevance (``sivae.tl.summarize_attributions``), PCA loadings. For every
pair, column d of one is rank-correlated with column d of the other; the paper reports the median
over dimensions of the absolute value (a summary's sign is arbitrary).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import spearmanr

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from .attribution import CellwiseAttributions
from .attribution_summary import summarize_attributions


def _resolve(adata: AnnData, name: str, value: Any) -> np.ndarray:
    if isinstance(value, str):
        if value not in adata.varm:
            raise InputError(f"{name!r}: adata.varm has no {value!r}; pass one of {list(adata.varm)} or an array")
        value = adata.varm[value]
    elif isinstance(value, CellwiseAttributions):
        value = summarize_attributions(value)
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name!r} must be a features x K matrix, a varm key or attributions; got {type(value).__name__}") from err
    if matrix.ndim != 2 or matrix.shape[0] != adata.n_vars:
        raise InputError(f"{name!r} must be {adata.n_vars} features x K; got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"{name!r} holds NaN or infinite values; remove them first")
    return matrix


def agreement(
    adata: AnnData,
    loadings: Mapping[str, str | np.ndarray | CellwiseAttributions],
    *,
    dims: list[int] | None = None,
    key_added: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame:
    """Per-dimension |Spearman| between every pair of interpretations, and its median.

    Parameters
    ----------
    adata
        The AnnData the interpretations describe; reads ``adata.varm`` for string values.
    loadings
        Name -> features x K matrix, key of ``adata.varm`` (e.g. "sivae_loadings"), or
        attributions from ``sivae.tl.attribute`` / ``gene_relevance`` (summarised here).
    dims
        Dimensions to compare (0-based); None: all K, which must then be equal for all.
    key_added, inplace
        The table is written to ``adata.uns[key_added]``; None: ``"sivae_agreement"`` (the key
        rule of ``sivae.tl``). ``inplace=False``: write nothing, only return it.

    Returns
    -------
    pandas.DataFrame
        One row per pair: columns "a", "b", "dim 1" ... "dim K" (|Spearman| of column d), then
        "median" and "mean" over the dimensions.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    if not isinstance(loadings, Mapping) or len(loadings) < 2:
        raise InputError("loadings must be a mapping of at least two names to interpretations")
    names = [str(name) for name in loadings]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise InputError(f"two interpretations are both named {clash[0]!r} once written as text (e.g. 1 and '1'); "
                         "give each a distinct name")
    mats = {str(name): _resolve(adata, str(name), value) for name, value in loadings.items()}
    if dims is not None:
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
            raise InputError(f"dims must be a list of dimension indices (0-based); got {dims!r}")
        dims = [_params.integer(d, "each entry of dims", minimum=0) for d in dims]
    widths = sorted({m.shape[1] for m in mats.values()})
    if dims is None:
        if len(widths) > 1:
            raise InputError(f"the interpretations have different numbers of dimensions {widths}; pass dims=")
        dims = list(range(widths[0]))
    if not len(dims) or min(dims) < 0 or max(dims) >= widths[0]:
        raise InputError(f"dims must index the {widths[0]} dimensions every interpretation has; got {list(dims)}")
    for name, matrix in mats.items():
        flat = [d for d in dims if np.ptp(matrix[:, d]) == 0]
        if flat:
            raise InputError(f"{name!r} is the same for every feature in dimension {flat[0] + 1}, so its rank "
                             "correlation is undefined; check how it was computed (e.g. too few cells summarised)")
    rows = []
    for a, b in combinations(mats, 2):
        rho = [abs(spearmanr(mats[a][:, d], mats[b][:, d])[0]) for d in dims]
        row: dict[str, Any] = {"a": a, "b": b}
        row.update({f"dim {d + 1}": r for d, r in zip(dims, rho)})
        row.update(median=float(np.nanmedian(rho)), mean=float(np.nanmean(rho)))
        rows.append(row)
    table = pd.DataFrame(rows)
    if inplace:
        adata.uns[KEYS.AGREEMENT if key_added is None else key_added] = table
    return table


def agreement_matrix(table: pd.DataFrame, value: str = "median") -> pd.DataFrame:
    """The pairs of an :func:`agreement` table as a symmetric name x name matrix (1 on the diagonal)."""
    if not isinstance(table, pd.DataFrame) or not {"a", "b", value} <= set(table.columns):
        raise InputError(f"expected a table from sivae.tl.agreement with columns a, b and {value!r}")
    names = list(dict.fromkeys([*table["a"], *table["b"]]))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b, v in zip(table["a"], table["b"], table[value]):
        matrix.loc[a, b] = matrix.loc[b, a] = v
    return matrix
