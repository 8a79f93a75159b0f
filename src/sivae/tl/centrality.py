"""Gene hubs from a trained model: the features it reconstructs best (paper, Methods)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from sivae._constants import KEYS
from sivae._errors import InputError


def hubs(adata: AnnData, *, n: int = 20, key: str = KEYS.CENTRALITY) -> pd.Series:
    """The ``n`` most central features, ranked by per-feature reconstruction accuracy.

    A hub's expression pattern is what the model keeps to rebuild its many neighbours, so it is
    reconstructed best; no gene network has to be inferred.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``. Reads ``adata.var[key]``.
    n
        How many features to return; all of them if there are fewer.
    key
        Column of ``adata.var`` holding the centrality (default ``"sivae_centrality"``).

    Returns
    -------
    pandas.Series
        Centrality of the top ``n`` features, highest first (ties in feature order), indexed by
        ``adata.var_names`` and named ``key``; features whose centrality is NaN are left out.
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
    ranked = scores.dropna().sort_values(ascending=False, kind="stable")
    return ranked.iloc[: int(n)].rename(key)
