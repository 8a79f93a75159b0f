"""Names (genes, cells, categories, paths) as one field of one line of text output.

A gene name may hold a tab, a newline or a terminal escape; printed as it is, it splits a
tab-separated table's row in two or rewrites the terminal. `field` escapes such characters as
Python writes them in a string literal (``\\t``, ``\\n``, ``\\x1b``), and the backslash itself, so
every name stays one field and can be told apart from any other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["field"]


def field(name: Any) -> str:
    """``str(name)`` with backslashes and unprintable characters escaped, e.g. ``"a\\tb"`` for a tab."""
    text = str(name)
    if text.isprintable() and "\\" not in text:
        return text
    # repr of one character is its escape as a literal: '\\t', '\\x1b', '\\u2028', '\\\\'
    return "".join(ch if ch.isprintable() and ch != "\\" else repr(ch)[1:-1] for ch in text)
