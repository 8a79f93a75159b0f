"""Figures of gene modules and gene-set enrichment: the modules on a map of the gene embedding, and
the top terms of each source of `sivae.tl.enrich`. Built without pyplot; given ``path``, saved
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from sivae._constants import KEYS
from sivae._errors import InputError

from ._common import _figure, _finish, _maybe_save
from ._plain import plain_text

_UNASSIGNED = "#c8c8c8"
_TERM_CHARS = 60  # a term name longer than this is cut with an ellipsis


@plain_text
def gene_modules(
    adata: AnnData,
    *,
    key: str = KEYS.MODULE,
    basis: str = KEYS.LOADINGS,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The genes on the first two principal components of their loadings, coloured by module.

    Parameters
    ----------
    adata
        AnnData after `sivae.tl.gene_modules`; reads ``adata.var[key]`` and ``adata.varm[basis]``.
    key
        The module column of ``adata.var`` (default ``"sivae_module"``).
    basis
        The gene embedding of ``adata.varm`` (default ``"sivae_loadings"``).
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        Unassigned genes in grey, each module in its colour and named at its median.
    """
    if not isinstance(adata, AnnData) or key not in adata.var or basis not in adata.varm:
        raise InputError(f"pl.gene_modules needs an AnnData with var[{key!r}] and varm[{basis!r}]; run "
                         "sivae.tl.gene_modules first")
    loadings = np.asarray(adata.varm[basis], dtype=np.float64)
    if loadings.shape[1] > 2 and loadings.shape[0] > 2:
        xy = PCA(2, random_state=0).fit_transform(loadings)
        labels = ("PC1 of loadings", "PC2 of loadings")
    else:
        xy = np.column_stack([loadings[:, 0], loadings[:, -1] if loadings.shape[1] > 1 else np.zeros(len(loadings))])
        labels = ("dim 1", f"dim {loadings.shape[1]}")
    modules = adata.var[key].astype("category")
    fig, ax = _figure(ax, (5.5, 4.5))
    free = modules.isna().to_numpy()
    ax.scatter(xy[free, 0], xy[free, 1], s=6, c=_UNASSIGNED, linewidths=0, label=f"unassigned ({free.sum()})")
    for i, name in enumerate(modules.cat.categories):
        inside = (modules == name).to_numpy()
        ax.scatter(xy[inside, 0], xy[inside, 1], s=10, color=_colour(i), linewidths=0, label=f"{name} ({inside.sum()})")
        if inside.any():
            centre = np.median(xy[inside], axis=0)
            ax.annotate(str(name), centre, ha="center", va="center", fontsize=8, weight="bold")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{len(modules.cat.categories)} gene modules")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _finish(ax)
    return _maybe_save(fig, path)


@plain_text
def enrichment(
    res: pd.DataFrame,
    *,
    n_terms: int = 3,
    sources: Sequence[str] | None = None,
    max_sources: int = 8,
    max_fdr: float = 0.25,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The top gene sets of each source of `sivae.tl.enrich`: -log10 FDR per term, dot size the overlap.

    Parameters
    ----------
    res
        The table `sivae.tl.enrich` returned (or ``adata.uns["sivae_enrichment"]["results"]``).
    n_terms
        Terms shown per source, smallest p first.
    sources
        Which sources to show, in this order; None: the ``max_sources`` sources whose best term
        has the smallest p.
    max_sources
        At most this many sources when ``sources`` is None.
    max_fdr
        Terms with a larger FDR are not drawn.
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        One row per term, grouped by source, with a dashed line at FDR 0.05.
    """
    missing = {"source", "term", "p", "fdr", "overlap"} - set(getattr(res, "columns", ()))
    if not isinstance(res, pd.DataFrame) or missing:
        raise InputError("res must be the DataFrame sivae.tl.enrich returned (columns source, term, p, fdr, overlap)")
    res = res[res["fdr"] <= max_fdr]
    if res.empty:
        raise InputError(f"no term of the enrichment table has FDR <= {max_fdr:g}; pass a larger max_fdr")
    if sources is None:
        sources = list(res.groupby("source")["p"].min().sort_values(kind="stable").index[:max_sources])
    unknown = [s for s in sources if s not in set(res["source"])]
    if unknown:
        raise InputError(f"source {unknown[0]!r} has no term with FDR <= {max_fdr:g}; choose from "
                         f"{sorted(set(res['source']))}")
    rows = pd.concat([res[res["source"] == s].nsmallest(n_terms, "p") for s in sources], ignore_index=True)
    fig, ax = _figure(ax, (7.5, 0.8 + 0.28 * len(rows)))
    y = np.arange(len(rows))[::-1]
    score = -np.log10(np.clip(rows["fdr"].to_numpy(dtype=float), 1e-300, 1.0))
    ax.scatter(score, y, s=12 + 4 * np.sqrt(rows["overlap"].to_numpy(dtype=float)), c="tab:blue", linewidths=0)
    ax.axvline(-np.log10(0.05), color="0.5", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, [f"{s}: {_short(t)}" for s, t in zip(rows["source"], rows["term"])], fontsize=7)
    ax.set_xlabel("-log10 FDR (dashed: FDR 0.05)")
    ax.set_title("gene-set enrichment")
    _finish(ax)
    return _maybe_save(fig, path)


def _colour(i: int) -> tuple[float, ...]:
    # tab20 without its two greys (unassigned genes' colour), strong hues first, cycled past 18 modules
    tab20 = colormaps["tab20"].colors
    palette = [tab20[j] for j in [*range(0, 20, 2), *range(1, 20, 2)] if j not in (14, 15)]  # strong hues first
    return palette[i % len(palette)]


def _short(term: str) -> str:
    term = str(term)
    return term if len(term) <= _TERM_CHARS else term[: _TERM_CHARS - 1] + "\u2026"
