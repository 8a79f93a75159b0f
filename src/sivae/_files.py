"""The one way sivae writes to disk: destinations checked first, then written whole or not at all.

Every writer (models, checkpoints, h5ad files, figures, reports, simulated data) goes through
:func:`check_destination` before any work and :func:`atomic_file` / :func:`atomic_folder` for the
write itself, so these rules hold everywhere:

- An existing file is replaced only with ``overwrite``; an existing *folder* only when it holds
  what we wrote there (a saved model, a checkpoint: the caller says which files make it ours),
  never a folder of the user's, whatever ``overwrite`` says.
- Data go to a hidden temporary name beside the destination (``.NAME.sivae-PID-RANDOM``), are
  flushed to disk and renamed over it, so a kill leaves either the old or the new, never half.
  Temporary names left by a killed process are removed on the next write to the same place.
- New files and folders get the modes the user's umask gives (not mkstemp's 0600/0700), so a
  model shared on a cluster is readable by the group.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._errors import InputError

try:
    import fcntl
except ImportError:  # not on Windows: there runs do not lock each other out
    fcntl = None

_TMP_TAG = "sivae"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_TMP_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary names of ours beside ``path`` whose writing process has died."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{_TMP_TAG}-(\d+)-[^/]*$")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        siblings = list(parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def is_owned_folder(path: Path, marker_files: Iterable[str], allowed: str | None = None) -> bool:
    """True when ``path`` is a real folder holding every marker file and only plain files whose
    names we write there (markers, or names matching the regular expression ``allowed``)."""
    markers = set(marker_files)
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    names = {entry.name for entry in entries}
    ours = all(e.name in markers or (allowed is not None and re.fullmatch(allowed, e.name)) for e in entries)
    return markers <= names and ours and all(e.is_file() and not e.is_symlink() for e in entries)


def check_destination(
    path: str | os.PathLike[str],
    *,
    what: str,
    overwrite: bool,
    folder: bool = False,
    owned_markers: Iterable[str] = (),
    owned_allowed: str | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Refuse a destination now, before any work, with one sentence.

    Parameters
    ----------
    path
        Where the output goes.
    what
        How to name it in messages ("output", "--model-dir", "the model folder").
    overwrite
        Whether an existing destination of the right kind may be replaced.
    folder
        The output is a folder; an existing one is replaced only when it holds every name in
        ``owned_markers`` (what we wrote there) and no other entries but files named as
        ``owned_allowed`` (a regular expression) says.
    inputs
        Paths the same command reads: the output may not be, contain or lie inside any of them.

    Returns
    -------
    pathlib.Path
        ``path``, unchanged.
    """
    p = Path(path)
    if p.is_symlink():
        raise InputError(f"{what} {str(p)!r} is a symbolic link; give the real path instead")
    if folder and p.exists():
        if not p.is_dir():
            raise InputError(f"{what} {str(p)!r} exists and is a file, not a folder; choose another path")
        if not overwrite:
            raise InputError(f"{what} {str(p)!r} exists; pass --force (overwrite=True) to replace it")
        if not is_owned_folder(p, owned_markers, owned_allowed):
            raise InputError(f"{what} {str(p)!r} is a folder that sivae did not write (not a saved "
                             "model or checkpoint folder); choose a new path: sivae never deletes it")
    elif p.exists():
        if p.is_dir():
            raise InputError(f"{what} {str(p)!r} is a folder; give a file name inside it instead")
        if not overwrite:
            raise InputError(f"{what} {str(p)!r} exists; pass --force (overwrite=True) to overwrite it")
    target = p.resolve()
    for source in inputs:
        src = Path(source).resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise InputError(f"{what} {str(p)!r} is, holds or lies inside the input {str(source)!r}; "
                             "write the result somewhere else")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {str(p)!r}: {str(ancestor)!r} is not writable; "
                         "choose a writable location")
    return p


def check_distinct(destinations: dict[str, str | os.PathLike[str] | None]) -> None:
    """Refuse two outputs of one command that are the same path or lie inside each other."""
    given = [(what, Path(p).resolve()) for what, p in destinations.items() if p is not None]
    for i, (what_a, a) in enumerate(given):
        for what_b, b in given[i + 1:]:
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise InputError(f"{what_a} and {what_b} name the same place ({str(a)!r}); give "
                                 "each output its own path")


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename after it is atomic on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(*paths: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the folders of ``paths`` (created if missing), so that sivae
    processes writing into the same place take turns: the outputs on disk come from one run."""
    folders = sorted({str(Path(p).absolute().parent) for p in paths})
    handles = []
    try:
        for folder in folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                continue
            fd = os.open(folder, os.O_RDONLY)
            handles.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        yield
    finally:
        for fd in handles:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed and renamed over it.

    Creates missing parent folders. The caller checked the destination (:func:`check_destination`);
    with ``overwrite=False`` a ``path`` that appeared meanwhile is still refused, not replaced.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(p)
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(p), dir=p.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        fsync_path(tmp)
        if not overwrite and (p.exists() or p.is_symlink()):
            raise InputError(f"{str(p)!r} appeared while this run was writing (another run?); it is "
                             "left as it is: pass --force (overwrite=True) to replace it")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, owned_markers: Iterable[str],
                  owned_allowed: str | None = None) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path`` whole.

    An existing ``path`` is replaced only when it is a folder of ours (:func:`is_owned_folder`);
    the old folder is moved aside and deleted only after the new one is in place.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(p)
    markers = tuple(owned_markers)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(p), dir=p.parent))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
        for child in tmp.iterdir():
            os.chmod(child, 0o666 & ~mask)
            fsync_path(child)
        if p.exists() or p.is_symlink():
            if not is_owned_folder(p, markers, owned_allowed):
                raise InputError(f"{str(p)!r} appeared while writing and is not a folder sivae "
                                 "wrote; it is left as it is, choose another path")
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(p), dir=p.parent))
            os.replace(p, old / "old")
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
