"""What every ``sivae`` subcommand shares: argument types and the checks of input and output paths.

A subcommand module (fit and embed here, networks, interpret, report beside this file) defines
``add_parsers(sub)`` and uses these, so every command refuses bad values and unwritable outputs
the same way, with one sentence, before doing any work.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sivae._errors import InputError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _top_genes(text: str) -> int | None:
    return None if text.strip().lower() == "all" else _positive_int(text)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths such as 64,32; got {text!r}"
        )
    return sizes


def _check_output(path: str | os.PathLike[str], *, force: bool, what: str, folder: bool) -> Path:
    """Refuse an output path now rather than after training: exists, wrong kind, not writable."""
    p = Path(path)
    if not folder and p.suffix.lower() != ".h5ad":
        raise InputError(f"{what} {str(p)!r} must end in .h5ad")
    if not folder and p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder; give a file name such as out.h5ad")
    if folder and p.exists() and not p.is_dir():
        raise InputError(f"{what} {str(p)!r} exists and is not a folder")
    if p.exists() and not force:
        raise InputError(f"{what} {str(p)!r} exists; pass --force to overwrite it")
    _check_writable(p, what)
    return p


def _check_writable(p: Path, what: str) -> None:
    # the nearest existing folder above p must let us create p (and any folders between)
    ancestor = p.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {str(p)!r}: {str(ancestor)!r} is not writable")


def _check_input(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {path!r} does not exist; check the path")
    return p


