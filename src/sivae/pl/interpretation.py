"""Figures of interpretations: agreement heatmaps (paper Fig. 3a) and loadings drawn as images
(Fig. 3c). Built without pyplot, like embeddings.py; given ``path``, saved atomically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sivae._constants import KEYS
from sivae._errors import InputError
from sivae._params import is_int
from sivae.tl.agreement import agreement_matrix

from ._common import _figure, _maybe_save
from ._plain import plain_text

_TRAILING_INT = re.compile(r"(\d+)$")


@plain_text
def agreement(
    table: pd.DataFrame,
    *,
    value: str = "median",
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Heatmap of how far interpretations agree, like the paper's Fig. 3a.

    Parameters
    ----------
    table
        From ``sivae.tl.agreement`` (also kept in ``adata.uns["sivae_agreement"]``).
    value
        Column to draw: "median" (default) or "mean" |Spearman| over dimensions, or "dim d".
    ax
        Axes to draw into; a new figure when None.
    path
        Where to save the figure (``.png``, ``.svg`` or ``.pdf``); not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the heatmap, each cell labelled with its value.
    """
    matrix = agreement_matrix(table, value)
    n = len(matrix)
    fig, ax = _figure(ax, (1.2 + 0.75 * n, 0.8 + 0.65 * n))
    image = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            v = matrix.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 else "white")
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    fig.colorbar(image, ax=ax, label=f"{value} |Spearman|", shrink=0.8)
    return _maybe_save(fig, path)


def _pixel_index(adata: AnnData, n_pixels: int, pixel_key: str | None) -> np.ndarray:
    # flat pixel position of each feature: a var column, the trailing number of its name, or order
    if pixel_key is not None:
        if pixel_key not in adata.var:
            raise InputError(f"adata.var has no {pixel_key!r} column of pixel positions")
        index = np.asarray(adata.var[pixel_key])
    else:
        found = [_TRAILING_INT.search(str(name)) for name in adata.var_names]
        if all(found):
            index = np.array([int(m.group(1)) for m in found])
        elif adata.n_vars == n_pixels:
            index = np.arange(n_pixels)
        else:
            raise InputError("cannot place the features on the image: name them with their pixel "
                             "number (e.g. 'pixel_123') or pass pixel_key, a var column of positions")
    index = np.asarray(index, dtype=np.int64)
    if index.min() < 0 or index.max() >= n_pixels or len(np.unique(index)) != len(index):
        raise InputError(f"pixel positions must be distinct and within the {n_pixels} pixels of the image")
    return index


@plain_text
def loadings_image(
    adata: AnnData,
    *,
    shape: tuple[int, int] = (28, 28),
    dims: Sequence[int] = (0, 1),
    loadings: Mapping[str, str | np.ndarray] | None = None,
    pixel_key: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Loadings of image data drawn as images, one per method and dimension (paper Fig. 3c).

    Parameters
    ----------
    adata
        Images as cells x pixels. Reads ``adata.varm`` for string values of ``loadings``.
    shape
        Height and width of an image.
    dims
        Dimensions to draw (0-based), one column each.
    loadings
        Row name -> features x K matrix or ``varm`` key; None: ``{"siVAE": "sivae_loadings"}``.
    pixel_key
        ``adata.var`` column with each feature's flat pixel position; None: the trailing number
        of its name ("pixel_123"), or the order when every pixel is present. Pixels dropped in
        preprocessing (constant ones) are left blank.
    path
        Where to save the figure; not saved when None.

    Returns
    -------
    matplotlib.figure.Figure
        Rows of methods, columns of dimensions; red positive, blue negative, each image scaled
        to its largest absolute loading.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    loadings = {"siVAE": KEYS.LOADINGS} if loadings is None else dict(loadings)
    if not (isinstance(shape, Sequence) and len(shape) == 2 and all(is_int(n) and n >= 1 for n in shape)):
        raise InputError(f"shape must be two positive integers (image height, width); got {shape!r}")
    n_pixels = int(np.prod(shape))
    index = _pixel_index(adata, n_pixels, pixel_key)
    mats = {}
    for name, value in loadings.items():
        if isinstance(value, str):
            if value not in adata.varm:
                raise InputError(f"adata.varm has no {value!r}; train a model or pass an array")
            value = adata.varm[value]
        mats[name] = np.asarray(value, dtype=np.float64)
        if mats[name].ndim != 2 or mats[name].shape[0] != adata.n_vars or max(dims) >= mats[name].shape[1]:
            raise InputError(f"{name!r} must be {adata.n_vars} features x at least {max(dims) + 1} dims")
    fig = Figure(figsize=(1.6 * len(dims) + 0.6, 1.6 * len(mats)), layout="constrained")
    axes = fig.subplots(len(mats), len(dims), squeeze=False)
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")  # pixels without a feature: grey
    for r, (name, mat) in enumerate(mats.items()):
        for c, d in enumerate(dims):
            image = np.full(n_pixels, np.nan)
            image[index] = mat[:, d]
            scale = np.nanmax(np.abs(image)) or 1.0
            ax = axes[r, c]
            ax.imshow(image.reshape(shape), cmap=cmap, vmin=-scale, vmax=scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"dim {d + 1}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    return _maybe_save(fig, path)
