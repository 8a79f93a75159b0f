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
from sivae._files import check_destination
from sivae._inputs import check_input_file


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


def _check_output(path: str | os.PathLike[str], *, force: bool, what: str, folder: bool = False,
                  suffix: str | tuple[str, ...] | None = ".h5ad",
                  inputs: tuple[str | os.PathLike[str], ...] = ()) -> Path:
    """Refuse an output path now rather than after the work (sivae._files.check_destination's
    rules: never a folder sivae did not write, never the input), plus the file suffix (one, or
    a tuple of those allowed: the sentence names the first)."""
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if not folder and suffixes is not None and not str(path).lower().endswith(suffixes):
        raise InputError(f"{what} {str(path)!r} must end in {suffixes[0]}")
    return check_destination(path, what=what, overwrite=force, folder=folder, inputs=inputs)


def _check_input(path: str) -> Path:
    # a regular file or a (10x) folder: a named pipe or device would block the command
    return check_input_file(path, what="input", folder=True)


