"""Names drawn as written: matplotlib reads text between two ``$`` as a formula (mathtext), so a
gene called ``$\\frac$`` made every plot fail to draw and ``$x$`` came out in italics. Gene, cell
type and method names are data, never formulas: every plot draws with mathtext off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib
from matplotlib.axes import Axes

__all__ = ["plain_axes", "plain_text"]

_Draw = TypeVar("_Draw", bound=Callable[..., Any])
# matplotlib reads this when a text is created, so texts made under it stay plain when drawn later
_NO_MATHTEXT = {"text.parse_math": False}


def plain_text(draw: _Draw) -> _Draw:
    """Run a plotting function with mathtext off: each text it creates shows its string as is."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_NO_MATHTEXT):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def plain_axes(ax: Axes) -> None:
    """Mathtext off for the texts a caller's Axes made before a plot draws into it: its title and
    axis labels, which the plot sets."""
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
        text.set_parse_math(False)
