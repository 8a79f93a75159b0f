"""Figures of the gene-network analyses (the paper's Fig. 5a-e): centrality against the ground
truth, the cumulative ground truth of each method's top hubs, neighbourhood PVE per method, and
the overlap matrices between methods' neighbour sets.

Each takes what a ``sivae.tl`` function returned, builds a Figure without pyplot and, given
``path``, saves it atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from sivae._errors import InputError

from ._common import _finish, _maybe_save
from ._plain import plain_text

Path_ = str | os.PathLike[str] | None


def _series(values: Any, name: str) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.astype(np.float64)
    raise InputError(f"{name} must be a pandas Series indexed by gene name (as sivae.tl returns); got {type(values).__name__}")


def _paired(centralities: Mapping[str, Any], truth: Any) -> tuple[pd.Series, dict[str, pd.Series]]:
    if not isinstance(centralities, Mapping) or not centralities:
        raise InputError("centralities must be a dict of method name -> per-gene centrality, with at least one entry")
    truth = _series(truth, "truth")
    methods = {}
    for name, values in centralities.items():
        values = _series(values, f"centralities[{name!r}]")
        shared = values.index.intersection(truth.index)
        if len(shared) < 3:
            raise InputError(f"centralities[{name!r}] shares {len(shared)} genes with truth; pass the same genes")
        methods[name] = values.loc[shared]
    return truth, methods


@plain_text
def centrality_truth(centralities: Mapping[str, Any], truth: Any, *, path: Path_ = None) -> Figure:
    """Each method's centrality against the ground truth, one panel per method (Fig. 5a).

    Parameters
    ----------
    centralities
        Method name -> per-gene centrality Series, e.g. ``{"siVAE": adata.var["sivae_centrality"],
        "CLR": sivae.tl.degree_centrality(w)}``.
    truth
        ``sivae.tl.centrality_ground_truth(adata)``.
    path
        Save the figure here (.png, .svg, .pdf).
    """
    truth, methods = _paired(centralities, truth)
    n_cols = min(3, len(methods))
    n_rows = -(-len(methods) // n_cols)
    fig = Figure(figsize=(3.2 * n_cols, 3.0 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes, methods.items()):
        t = truth.loc[values.index]
        ax.scatter(t, values, s=8, c="tab:blue", linewidths=0)
        rho = spearmanr(t, values).statistic
        ax.set_title(f"{name}  (Spearman {rho:.2f})", fontsize=9)
        ax.set_xlabel("ground-truth centrality (PVE)")
        _finish(ax)
    for ax in axes[::n_cols]:
        ax.set_ylabel("predicted centrality")
    return _maybe_save(fig, path)


@plain_text
def cumulative_truth(centralities: Mapping[str, Any], truth: Any, *, n: int = 50, path: Path_ = None) -> Figure:
    """Cumulative ground-truth centrality of each method's top ``n`` predicted hubs (Fig. 5b)."""
    truth, methods = _paired(centralities, truth)
    fig = Figure(figsize=(4.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for name, values in methods.items():
        top = values.sort_values(ascending=False, kind="stable").index[:n]
        ax.plot(np.arange(1, len(top) + 1), truth.loc[top].cumsum().to_numpy(), label=name)
    order = truth.sort_values(ascending=False).iloc[:n]
    ax.plot(np.arange(1, len(order) + 1), order.cumsum().to_numpy(), "k--", lw=0.8, label="best possible")
    ax.set_xlabel("top predicted hubs")
    ax.set_ylabel("cumulative ground-truth centrality")
    ax.legend(fontsize=7, frameon=False)
    _finish(ax)
    return _maybe_save(fig, path)


@plain_text
def neighborhood_pve(result: Any, *, path: Path_ = None) -> Figure:
    """Mean held-out PVE of each method's neighbour sets, with one s.d. (Fig. 5c).

    ``result`` is what ``sivae.tl.compare_neighborhoods`` returned (or its ``"pve"`` table).
    """
    pve = result["pve"] if isinstance(result, Mapping) else result
    if not isinstance(pve, pd.DataFrame) or pve.empty:
        raise InputError("neighborhood_pve needs the result of sivae.tl.compare_neighborhoods")
    fig = Figure(figsize=(0.7 * pve.shape[1] + 1.5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(pve.shape[1])
    ax.bar(x, pve.mean().to_numpy(), yerr=pve.std().to_numpy(), color="tab:blue", capsize=3)
    ax.set_xticks(x, pve.columns, rotation=45, ha="right")
    ax.set_ylabel(f"PVE of query gene ({len(pve)} genes)")
    _finish(ax)
    return _maybe_save(fig, path)


@plain_text
def overlap(matrix: Any, *, title: str = "Jaccard index", path: Path_ = None) -> Figure:
    """A methods x methods heatmap with its values written in (Fig. 5d, 5e).

    ``matrix``: ``result["jaccard"]`` or ``result["correlation"]`` of ``sivae.tl.compare_neighborhoods``.
    """
    if not isinstance(matrix, pd.DataFrame) or matrix.shape[0] != matrix.shape[1] or matrix.empty:
        raise InputError("overlap needs a square methods x methods DataFrame, e.g. result['jaccard']")
    n = matrix.shape[0]
    fig = Figure(figsize=(0.6 * n + 2.2, 0.6 * n + 1.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix.to_numpy(dtype=np.float64), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    for i in range(n):
        for j in range(n):
            value = float(matrix.iat[i, j])
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    return _maybe_save(fig, path)
