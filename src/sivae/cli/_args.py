"""What every ``sivae`` subcommand shares: argument types and the checks of input and output paths.

A subcommand module (fit and embed here, networks, interpret, report beside this file) defines
``add_parsers(sub)`` and uses these, so every command refuses bad values and unwritable outputs
the same way, with one sentence, before doing any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from sivae import _params
from sivae._errors import InputError
from sivae._files import check_destination
from sivae._inputs import check_input_file
from sivae._params import cli_type


# argparse types built from the checkers the Python API uses (sivae._params), so both refuse the
# same values naming the same expected kind
_positive_int = cli_type(_params.count)
_non_negative_float = cli_type(_params.non_negative, float)
_positive_float = cli_type(_params.positive, float)
_seed = cli_type(_params.seed)
_n_jobs = cli_type(_params.jobs)
_finite_float = cli_type(_params.number, float)
_device = cli_type(_params.device_name, str, name="--device")


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


