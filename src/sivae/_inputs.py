"""What an input path must be before sivae opens it: a regular file, or a folder where one is meant.

Opening a named pipe blocks until some other process writes to it, a character device may never
end, a socket cannot be opened at all: each is refused here from the path's ``stat``, which
never blocks, so every reader (``sivae.read``, backed files, model folders, the CLI's inputs)
refuses them the same way, with one sentence, before anything is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._errors import InputError

__all__ = ["check_input_file"]

# st_mode test -> how a message names that kind of file
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_input_file(path: str | os.PathLike[str], *, what: str = "input", folder: bool = False) -> Path:
    """Refuse an input that is missing or is not a regular file (a folder only when ``folder``).

    Parameters
    ----------
    path
        The path about to be read; symbolic links are followed to what they name.
    what
        How to name it in a message, e.g. ``"input"`` or ``"model file"``.
    folder
        Accept a folder too (a 10x mtx folder, a model folder).

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.

    Raises
    ------
    InputError
        If the path does not exist or cannot be reached, or is a named pipe, socket, device (or a
        folder when ``folder`` is False).
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{what} {str(p)!r} does not exist; check the path") from None
    except OSError as err:  # a symbolic link loop, a name too long, a folder we may not enter
        raise InputError(f"cannot reach {what} {str(p)!r} ({err.strerror or type(err).__name__}); "
                         "check the path and its permissions") from None
    if stat.S_ISREG(mode) or (folder and stat.S_ISDIR(mode)):
        return p
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {str(p)!r} is a folder; pass a file")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise InputError(f"{what} {str(p)!r} is {kind}, which sivae does not read because it could block "
                     "or never end; save the data to a regular file and pass that")
