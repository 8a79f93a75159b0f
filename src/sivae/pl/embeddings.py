"""Figures of a trained model's output: cell embedding, feature embedding, per-gene centrality.

Every function takes the AnnData first, reads the keys the model wrote, returns a matplotlib
``Figure`` and, given ``path``, saves it (PNG, SVG or PDF by suffix) under a temporary name first
and renames it, so an interrupted run never leaves half a file. Figures are built without pyplot, so
they work under any backend (Agg on a cluster) and are not kept alive by pyplot's global state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from adjustText import adjust_text
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sivae._constants import KEYS
from sivae._errors import InputError
from sivae._params import is_int
from sivae.data.validate import check_anndata_matrices

from ._common import _figure, _finish, _maybe_save
from ._plain import plain_text

_DEFAULT_HUBS = 10  # features marked when highlight is None and a centrality column exists
_MAX_LABELS = 30  # beyond this many highlighted features, mark them without text labels
_LABEL_SIZE = 7  # points
_LABEL_OFFSET = (8.0, 2.0)  # label corner relative to its point, in points (clears a star)
_LABEL_ITERATIONS = 800  # adjustText steps: a fixed count, so a figure does not depend on CPU speed
_HUB_STYLE = {"marker": "*", "s": 160, "edgecolors": "black", "linewidths": 0.8, "zorder": 3}

Highlight = int | str | Sequence[str] | None


@plain_text
def cell_embedding(
    adata: AnnData,
    *,
    color: str,
    basis: str = "sivae",
    dims: tuple[int, int] = (0, 1),
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Scatter of cells in two dimensions of an embedding, coloured by an annotation or a gene.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``. Reads ``adata.obsm[f"X_{basis}"]`` and ``adata.obs[color]``
        or, when ``color`` is a feature name, that feature's column of ``adata.X``.
    color
        Column of ``adata.obs`` (categorical: legend; numeric: colour bar) or a name in
        ``adata.var_names``.
    basis
        Embedding to draw: ``"sivae"`` reads ``obsm["X_sivae"]``; likewise ``"vae"``, ``"pca"``.
    dims
        The two embedding dimensions to draw (0-based).
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the plot.
    """
    _check_adata(adata)
    key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm:
        raise InputError(f"adata.obsm has no {key!r} embedding; run model.train() first")
    xy = _two_dims(np.asarray(adata.obsm[key]), dims, f"adata.obsm[{key!r}]")
    values = _cell_values(adata, color)
    fig, ax = _figure(ax, (5.5, 4.5))
    _scatter(ax, xy, values, _palette(adata, color, "obs"))
    name = key.removeprefix("X_")
    ax.set(xlabel=f"{name} {dims[0] + 1}", ylabel=f"{name} {dims[1] + 1}")
    ax.set_title(f"cells coloured by {color}")
    _finish(ax)
    return _maybe_save(fig, path)


@plain_text
def feature_embedding(
    adata: AnnData,
    *,
    color: str | None = None,
    highlight: Highlight = None,
    key: str = KEYS.LOADINGS,
    dims: tuple[int, int] = (0, 1),
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Scatter of features (genes) by their loadings, with hubs marked by a star and labelled.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``. Reads ``adata.varm[key]``, ``adata.var[color]`` and, for
        the default highlight, ``adata.var["sivae_centrality"]``.
    color
        Column of ``adata.var`` to colour by (e.g. ``"community"``); grey when None.
    highlight
        Features to mark: an int n marks the n most central ones; a string names a boolean column
        of ``adata.var`` (e.g. ``"is_hub"``) or one feature; a list names features. None marks the
        10 most central features when ``adata.var`` has a centrality column, else none.
    key
        Loadings in ``adata.varm`` (``"sivae_loadings"``; ``"ldvae_loadings"`` for LDVAE).
    dims
        The two loading dimensions to draw (0-based).
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the plot.
    """
    _check_adata(adata)
    if key not in adata.varm:
        raise InputError(f"adata.varm has no {key!r} loadings; run model.train() first")
    xy = _two_dims(np.asarray(adata.varm[key]), dims, f"adata.varm[{key!r}]")
    values = _var_values(adata, color)
    marked = _highlighted(adata, highlight)
    fig, ax = _figure(ax, (5.5, 4.5))
    _scatter(ax, xy, values, _palette(adata, color, "var"), marked, _marked_label(highlight))
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel=f"loading {dims[0] + 1}", ylabel=f"loading {dims[1] + 1}")
    ax.set_title("feature embedding" + (f" coloured by {color}" if color else ""))
    _label_scatter(ax, xy, marked, adata.var_names)
    _finish(ax)
    return _maybe_save(fig, path)


@plain_text
def centrality(
    adata: AnnData,
    *,
    color: str | None = None,
    highlight: Highlight = None,
    key: str = KEYS.CENTRALITY,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Per-feature reconstruction accuracy (the model's centrality), sorted, hubs starred.

    Parameters
    ----------
    adata
        AnnData after ``model.train()``. Reads ``adata.var[key]`` and ``adata.var[color]``.
    color
        Column of ``adata.var`` to colour the dots by (e.g. ``"community"``); grey when None.
    highlight
        Features to mark, as in :func:`feature_embedding`; None marks the 10 most central.
    key
        Centrality column of ``adata.var`` (default ``"sivae_centrality"``).
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the plot: x is the feature's rank, y its reconstruction accuracy.
    """
    _check_adata(adata)
    if key not in adata.var.columns:
        raise InputError(f"adata.var has no {key!r} column; run model.train() first")
    scores = pd.to_numeric(adata.var[key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(scores).any():
        raise InputError(f"adata.var[{key!r}] holds no finite values; run model.train() first")
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    floor = _robust_floor(scores)
    xy = np.column_stack([np.arange(1, scores.size + 1), np.maximum(scores[order], floor)])
    values = _var_values(adata, color)
    values = None if values is None else values.iloc[order].reset_index(drop=True)
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(order.size)
    marked = rank_of[_highlighted(adata, highlight, key=key)]
    fig, ax = _figure(ax, (7.0, 3.8))
    _scatter(ax, xy, values, _palette(adata, color, "var"), marked, _marked_label(highlight))
    ax.set(xlabel="feature rank", ylabel="centrality (correlation of reconstruction and data)")
    clipped = int(np.sum(scores < floor))
    ax.set_title("per-feature reconstruction accuracy"
                 + (f"\n({clipped} features below {floor:.3g} drawn at {floor:.3g})" if clipped else ""))
    _label(ax, xy, marked, adata.var_names[order], dx=20.0)  # right of the top-ranked stars
    _finish(ax)
    return _maybe_save(fig, path)


def _robust_floor(scores: np.ndarray) -> float:
    # the y axis spans the bulk of the features: a few badly reconstructed ones (accuracy -1e8 for
    # a gene seen in one cell) would otherwise flatten every other feature onto one line
    low, high = np.nanpercentile(scores, [5, 95])
    return float(min(low - (high - low), 0.0)) if np.isfinite(low) else -np.inf


def _check_adata(adata: Any) -> None:
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData; got {type(adata).__name__}")


def _two_dims(matrix: np.ndarray, dims: tuple[int, int], name: str) -> np.ndarray:
    if matrix.ndim != 2:
        raise InputError(f"{name} must be 2-D; got shape {matrix.shape}")
    n_dims = matrix.shape[1]
    ok = isinstance(dims, Sequence) and len(dims) == 2 and all(is_int(d) and 0 <= d < n_dims for d in dims)
    if not ok:
        raise InputError(f"dims must be two indices below {n_dims} ({name}); got {dims!r}")
    return np.asarray(matrix[:, list(dims)], dtype=np.float64)


def _cell_values(adata: AnnData, color: str) -> pd.Series:
    # an obs column, or one feature's expression across cells
    if color in adata.obs.columns:
        return adata.obs[color].reset_index(drop=True)
    if color in adata.var_names:
        check_anndata_matrices(adata)  # before the subset, which touches every matrix
        column = adata[:, color].X
        column = column.toarray() if sp.issparse(column) else np.asarray(column)
        return pd.Series(column.ravel().astype(np.float64))
    raise InputError(f"color {color!r} is neither a column of adata.obs nor a feature name")


def _var_values(adata: AnnData, color: str | None) -> pd.Series | None:
    if color is None:
        return None
    if color not in adata.var.columns:
        raise InputError(f"color {color!r} is not a column of adata.var")
    return adata.var[color].reset_index(drop=True)


def _palette(adata: AnnData, color: str | None, axis: str) -> list[str] | None:
    # scanpy keeps category colours in uns[f"{color}_colors"]; reuse them when they fit
    colours = adata.uns.get(f"{color}_colors") if color else None
    frame = adata.obs if axis == "obs" else adata.var
    if colours is None or color not in frame.columns:
        return None
    column = frame[color]
    if isinstance(column.dtype, pd.CategoricalDtype) and len(colours) == len(column.cat.categories):
        return [str(c) for c in colours]
    return None


def _highlighted(adata: AnnData, highlight: Highlight, key: str = KEYS.CENTRALITY) -> np.ndarray:
    # integer positions (in var order) of the features to mark
    from sivae.tl.centrality import hubs

    if highlight is None:
        if key not in adata.var.columns:
            return np.array([], dtype=int)
        highlight = _DEFAULT_HUBS
    if isinstance(highlight, (int, np.integer)) and not isinstance(highlight, bool):
        names = list(hubs(adata, n=int(highlight), key=key).index) if highlight > 0 else []
    elif isinstance(highlight, str) and highlight in adata.var.columns:
        mask = adata.var[highlight]
        if mask.dtype != bool:
            raise InputError(
                f"highlight column adata.var[{highlight!r}] must be boolean; got {mask.dtype}"
            )
        return np.flatnonzero(mask.to_numpy())
    elif isinstance(highlight, str):
        names = [highlight]
    elif isinstance(highlight, (Sequence, np.ndarray, pd.Index)):
        names = [str(h) for h in highlight]
    else:
        raise InputError(
            f"highlight must be an int, a var column, or feature names; got {highlight!r}"
        )
    missing = [n for n in names if n not in adata.var_names]
    if missing:
        raise InputError(f"highlight names {len(missing)} unknown features, e.g. {missing[0]!r}")
    return adata.var_names.get_indexer(names)


def _marked_label(highlight: Highlight) -> str:
    # legend text for the star markers
    if isinstance(highlight, str):
        return highlight
    if highlight is None or isinstance(highlight, (int, np.integer)):
        return "most central"
    return "highlighted"


def _scatter(
    ax: Axes,
    xy: np.ndarray,
    values: pd.Series | None,
    palette: list[str] | None,
    marked: np.ndarray | None = None,
    marked_label: str = "highlighted",
) -> None:
    size = float(np.clip(20000 / max(len(xy), 1), 2, 30))
    marked = np.array([], dtype=int) if marked is None else np.asarray(marked, dtype=int)
    if values is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c="0.55", linewidths=0)
        if marked.size:
            ax.scatter(xy[marked, 0], xy[marked, 1], c="0.55", label=marked_label, **_HUB_STYLE)
            ax.legend(loc="best", fontsize=7)
        return
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        points = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=numbers, cmap="viridis", linewidths=0)
        if marked.size:
            ax.scatter(
                xy[marked, 0], xy[marked, 1], c=numbers[marked], cmap="viridis",
                norm=points.norm, **_HUB_STYLE,
            )
        ax.get_figure().colorbar(points, ax=ax, label=str(values.name or ""), shrink=0.8)
        return
    _scatter_categories(ax, xy, values, palette, size, marked)
    if marked.size:
        ax.scatter([], [], c="white", label=marked_label, **_HUB_STYLE)
    ax.legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
        markerscale=max(1.0, 20 / size) ** 0.5, title=str(values.name or ""), title_fontsize=8,
    )


def _scatter_categories(
    ax: Axes,
    xy: np.ndarray,
    values: pd.Series,
    palette: list[str] | None,
    size: float,
    marked: np.ndarray,
) -> None:
    cats = values.astype("category")
    names = [str(c) for c in cats.cat.categories]
    if palette is None:
        cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
        palette = [cmap(i % cmap.N) for i in range(len(names))]
    codes = cats.cat.codes.to_numpy()
    is_marked = np.zeros(len(xy), dtype=bool)
    is_marked[marked] = True
    for i, name in enumerate(names):
        rows = codes == i
        ax.scatter(xy[rows, 0], xy[rows, 1], s=size, color=palette[i], label=name, linewidths=0)
        star = rows & is_marked
        if star.any():
            ax.scatter(xy[star, 0], xy[star, 1], color=palette[i], **_HUB_STYLE)
    if (codes == -1).any():
        rows = codes == -1
        ax.scatter(xy[rows, 0], xy[rows, 1], s=size, c="0.8", label="NA", linewidths=0)


def _label_scatter(ax: Axes, xy: np.ndarray, marked: np.ndarray, names: Sequence[str]) -> None:
    # name each marked point of a 2-D cloud: adjustText pushes the names off each other, off the
    # stars and off the other points, and joins a moved name to its star by a line. Hubs sit at the
    # cloud's edge, so the axes get a margin for the names to go into.
    if len(marked) == 0 or len(marked) > _MAX_LABELS:
        return
    ax.margins(0.08)
    ax.autoscale_view()
    stars = ax.scatter(xy[marked, 0], xy[marked, 1], s=_HUB_STYLE["s"], alpha=0.0, zorder=0)  # what to avoid
    texts = [ax.text(xy[i, 0], xy[i, 1], str(names[i]), fontsize=_LABEL_SIZE, zorder=4) for i in marked]
    # stronger text forces than adjustText's defaults: on 12 crowded layouts (10 hubs within 0.02-0.07
    # of each other) no two names overlapped, against 2-5 layouts with overlaps at the defaults
    adjust_text(texts, x=xy[:, 0], y=xy[:, 1], objects=stars, ax=ax, iter_lim=_LABEL_ITERATIONS,
                expand=(1.2, 1.5), force_text=(0.3, 0.5), min_arrow_len=8,
                arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.5})
    stars.remove()


def _label(
    ax: Axes, xy: np.ndarray, marked: np.ndarray, names: Sequence[str], dx: float = _LABEL_OFFSET[0]
) -> None:
    # name each marked point along a curve (the sorted centrality): labels that would overlap are
    # pushed down into a column and joined by a line
    if len(marked) == 0 or len(marked) > _MAX_LABELS:
        return
    ax.autoscale_view()
    offsets = _label_offsets(ax, xy[marked], [str(names[i]) for i in marked], dx)
    for i, (dx, dy) in zip(marked, offsets):
        moved = abs(dy - _LABEL_OFFSET[1]) > 1
        ax.annotate(
            str(names[i]), (xy[i, 0], xy[i, 1]), xytext=(dx, dy), textcoords="offset points",
            fontsize=_LABEL_SIZE, zorder=4, va="bottom",
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5} if moved else None,
        )


def _label_offsets(
    ax: Axes, points: np.ndarray, texts: list[str], dx: float
) -> list[tuple[float, float]]:
    # greedy: in screen points, place labels top-down, each below any placed label it would hit
    fig = ax.get_figure()
    box = ax.get_position()
    width = box.width * fig.get_figwidth() * 72
    height = box.height * fig.get_figheight() * 72
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    px = (points[:, 0] - x0) / ((x1 - x0) or 1.0) * width
    py = (points[:, 1] - y0) / ((y1 - y0) or 1.0) * height
    text_h = _LABEL_SIZE * 1.3
    placed: list[tuple[float, float, float]] = []  # (left, right, bottom) of labels placed so far
    offsets: dict[int, tuple[float, float]] = {}
    for i in np.argsort(-py, kind="stable"):
        left = px[i] + dx
        right = left + 0.6 * _LABEL_SIZE * len(texts[i])
        bottom = py[i] + _LABEL_OFFSET[1]
        for p_left, p_right, p_bottom in sorted(placed, key=lambda b: -b[2]):
            overlap_x = left < p_right and p_left < right
            if overlap_x and abs(bottom - p_bottom) < text_h:
                bottom = p_bottom - text_h
        placed.append((left, right, bottom))
        offsets[int(i)] = (dx, bottom - py[i])
    return [offsets[i] for i in range(len(points))]
