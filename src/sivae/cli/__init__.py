"""The ``sivae`` command: ``fit`` a model to a file, ``embed`` new cells with it, run the ``demo``,
``simulate-large`` a sparse count matrix for scale tests; each group of subcommands has its own
module beside this one (fit.py, embed.py, data.py, ...) with ``add_parsers(sub)``.

Bad input ends the command with one line, ``sivae: error: <sentence>``, and exit status 2; output
paths are checked before any training, so a refused run has done nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sivae._errors import InputError

from . import data, differential, embed, fit, interpret, modules, networks, report

_EXIT_BAD_INPUT = 2
# errors that mean "the input or a path is wrong": one line, no traceback
_BAD_INPUT = (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sivae`` command line.

    Parameters
    ----------
    argv
        Arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad arguments or bad input, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed usage and its one-line error (or --help)
        return stop.code if isinstance(stop.code, int) else _EXIT_BAD_INPUT
    try:
        return args.run(args)
    except _BAD_INPUT as err:
        _say(f"sivae: error: {_sentence(err)}")
        return _EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say("sivae: interrupted; outputs are only ever written whole, so none is half-written")
        return _EXIT_INTERRUPTED


def _say(line: str) -> None:
    # one write of the whole line: stderr is unbuffered, print writes the newline separately, and
    # under torchrun the ranks share it, so two ranks' sentences could run into one line
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _sentence(err: BaseException) -> str:
    # one line, whatever the exception carries
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.strerror or type(err).__name__}: {os.fsdecode(err.filename)!r}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


# -- arguments ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block); subcommands inherit it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(_EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sivae",
        description="siVAE: interpretable cell and feature embeddings for single-cell data.",
    )
    from sivae import __version__

    parser.add_argument("--version", action="version", version=f"sivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{fit,embed,demo,simulate-large,hubs,neighbors,grn,modules,enrich,diff-hubs,attribute,report}")
    for commands in (fit, embed, data, networks, modules, differential, interpret, report):
        commands.add_parsers(sub)
    return parser
