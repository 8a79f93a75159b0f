"""The figure of `sivae.tl.differential_hubs`: each gene's centrality in the reference group
against the target group, the genes whose change passes the FDR cut coloured and the largest
changes named."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from adjustText import adjust_text
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sivae._constants import KEYS
from sivae._errors import InputError

from ._common import _figure, _finish, _maybe_save
from ._plain import plain_text

_NEEDED = ("centrality_reference", "centrality_target", "difference", "fdr")


@plain_text
def differential_hubs(
    result: pd.DataFrame | AnnData,
    *,
    n_labels: int = 10,
    fdr: float = 0.05,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Centrality in the reference group (x) against the target group (y), one point per gene.

    Genes above the diagonal gain centrality in the target group. Those with FDR below ``fdr``
    are coloured (red: gain, blue: loss), and the ``n_labels`` of them with the largest absolute
    difference are named.

    Parameters
    ----------
    result
        The DataFrame `sivae.tl.differential_hubs` returned, or an AnnData it wrote into
        (reads ``adata.uns["sivae_differential_hubs"]``).
    n_labels
        How many significant genes to name.
    fdr
        FDR cut for colouring.
    ax
        Draw into these axes; a new figure otherwise.
    path
        Save the figure here (.png, .svg, .pdf).

    Returns
    -------
    matplotlib.figure.Figure
    """
    table, groups = _table(result)
    if not 0 < fdr <= 1:
        raise InputError(f"fdr must be in (0, 1]; got {fdr!r}")
    fig, ax = _figure(ax, (4.2, 4.0))
    x, y = table["centrality_reference"].to_numpy(float), table["centrality_target"].to_numpy(float)
    shown = np.isfinite(x) & np.isfinite(y)
    hit = shown & (table["fdr"].to_numpy(float) < fdr)
    gain = hit & (table["difference"].to_numpy(float) > 0)
    ax.scatter(x[shown & ~hit], y[shown & ~hit], s=6, c="0.7", linewidths=0, label="not significant")
    ax.scatter(x[gain], y[gain], s=10, c="tab:red", linewidths=0, label=f"gain (FDR < {fdr:g})")
    ax.scatter(x[hit & ~gain], y[hit & ~gain], s=10, c="tab:blue", linewidths=0, label=f"loss (FDR < {fdr:g})")
    if shown.any():
        lo, hi = min(x[shown].min(), y[shown].min()), max(x[shown].max(), y[shown].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.6)
    order = np.argsort(-np.abs(np.where(hit, table["difference"].to_numpy(float), 0.0)), kind="stable")
    named = [i for i in order[: max(int(n_labels), 0)] if hit[i]]
    if named:
        texts = [ax.text(x[i], y[i], str(table.index[i]), fontsize=7) for i in named]
        adjust_text(texts, x=x[shown], y=y[shown], ax=ax, arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.5})
    ax.set_xlabel(f"centrality in {groups[0]}")
    ax.set_ylabel(f"centrality in {groups[1]}")
    ax.legend(fontsize=7, frameon=False)
    _finish(ax)
    return _maybe_save(fig, path)


def _table(result: Any) -> tuple[pd.DataFrame, tuple[str, str]]:
    # the per-gene table and the (reference, target) names, from a DataFrame or an AnnData
    params: dict[str, Any] = {}
    if isinstance(result, AnnData):
        stored = result.uns.get(KEYS.DIFFERENTIAL_HUBS)
        if not isinstance(stored, dict) or "table" not in stored:
            raise InputError(f"adata.uns has no {KEYS.DIFFERENTIAL_HUBS!r} result; run sivae.tl.differential_hubs first")
        result, params = stored["table"], dict(stored.get("params", {}))
    if not isinstance(result, pd.DataFrame) or any(c not in result.columns for c in _NEEDED):
        raise InputError("result must be the DataFrame sivae.tl.differential_hubs returned "
                         f"(columns {', '.join(_NEEDED)}), or an AnnData it wrote into")
    params = params or dict(result.attrs)
    return result, (str(params.get("reference", "reference")), str(params.get("target", "target")))
