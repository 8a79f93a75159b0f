"""What every figure of sivae.pl shares: a figure with its axes, the house style, saving atomically."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sivae._errors import InputError
from sivae._files import atomic_file, check_destination

from ._plain import plain_axes

_FORMATS = ("png", "svg", "pdf")


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.add_subplot()
    plain_axes(ax)  # its title and labels were made before: names set on them are drawn as written
    fig = ax.get_figure()
    while not isinstance(fig, Figure):  # a SubFigure: save its root figure
        fig = fig.get_figure()
    return fig, ax


def _finish(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def _maybe_save(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save(fig, path)
    return fig


def save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save a figure atomically: write a temporary file beside ``path``, then rename it.

    Parameters
    ----------
    fig
        The figure to save.
    path
        Destination ending in ``.png``, ``.svg`` or ``.pdf``; its folder must exist. Replaced if
        it exists.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise InputError(f"figure path {str(path)!r} must end in .png, .svg or .pdf")
    if not path.parent.is_dir():
        raise InputError(f"folder {str(path.parent)!r} for the figure does not exist; create it")
    check_destination(path, what="figure", overwrite=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format=fmt, dpi=150, bbox_inches="tight")
    return path
