"""The one way sivae writes to disk: destinations checked first, then written whole or not at all.

Every writer (models, checkpoints, h5ad files, figures, reports, simulated data) goes through
:func:`check_destination` before any work and :func:`atomic_file` / :func:`atomic_folder` for the
write itself, so these rules hold everywhere:

- An existing file is replaced only with ``overwrite``; an existing *folder* only when it holds
  what we wrote there (a saved model, a checkpoint: the caller says which files make it ours),
  never a folder of the user's, whatever ``overwrite`` says.
- Data go to a hidden temporary name beside the destination (``.NAME.sivae-PID-RANDOM``), are
  flushed to disk and renamed over it, so a kill leaves either the old or the new, never half.
  A folder, or several outputs of one run, are committed together through a journal
  (:mod:`sivae._commit`): the next write or read of the place finishes a decided commit or drops
  an undecided one; a folder moved aside is never deleted before its replacement is in place.
- A full disk is one sentence naming the filesystem, the path and the space needed, and leaves
  no temporary behind; HDF5 files are built in memory first, so HDF5 never sees a failed write
  (it crashes when closing a file whose last write failed: h5py issues #914 and #2160).
- New files and folders get the modes the user's umask gives (not mkstemp's 0600/0700), so a
  model shared on a cluster is readable by the group.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._commit import Commit, ensure_space, fsync_path, is_no_space, no_space, recover, recover_inside, write_bytes
from ._errors import InputError

__all__ = ["atomic_file", "atomic_folder", "atomic_outputs", "check_destination", "check_distinct",
           "ensure_space", "fsync_path", "is_owned_folder", "locked", "recover_inside", "recover_outputs",
           "resolved", "hdf5_file", "write_anndata", "write_bytes"]

try:
    import fcntl
except ImportError:  # not on Windows: there runs do not lock each other out
    fcntl = None


def recover_outputs(path: str | os.PathLike[str]) -> None:
    """Finish or drop what a killed sivae run left beside ``path`` (:func:`sivae._commit.recover`);
    readers call it too, so a reader never sees half of a decided commit."""
    recover(Path(path))


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
    target = resolved(p, what)
    recover(p)  # what a killed run left here (or inside a folder of ours) is finished or dropped first
    if folder and p.is_dir() and not p.is_symlink():
        recover_inside(p)
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
    for source in inputs:
        src = resolved(Path(source), "the input")
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise InputError(f"{what} {str(p)!r} is, holds or lies inside the input {str(source)!r}; "
                             "write the result somewhere else")
    _check_writable(p, target, what)
    return p


def _check_writable(p: Path, target: Path, what: str) -> None:
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {str(p)!r}: {str(ancestor)!r} is not writable; "
                         "choose a writable location")


def resolved(path: Path, what: str) -> Path:
    """``path`` with every symbolic link followed; a loop or an unreadable link is one sentence."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: Python < 3.13 on a symlink loop
        raise InputError(f"{what} {str(path)!r} cannot be resolved: a symbolic link on the way loops "
                         f"back on itself or cannot be read ({err}); give a path without it") from None


def check_distinct(destinations: dict[str, str | os.PathLike[str] | None]) -> None:
    """Refuse two outputs of one command that are the same path or lie inside each other."""
    given = [(what, resolved(Path(p), what)) for what, p in destinations.items() if p is not None]
    for i, (what_a, a) in enumerate(given):
        for what_b, b in given[i + 1:]:
            if a == b:
                raise InputError(f"{what_a} and {what_b} name the same place ({str(a)!r}); give "
                                 "each output its own path")
            inner, outer = (what_a, what_b) if a.is_relative_to(b) else (what_b, what_a)
            if a.is_relative_to(b) or b.is_relative_to(a):
                raise InputError(f"{inner} lies inside {outer} ({str(b if inner == what_a else a)!r}), "
                                 f"which sivae replaces whole; give {outer} a folder of its own")


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
def atomic_outputs() -> Iterator[Commit]:
    """Several outputs written together: ``commit.file(path, overwrite=...)`` and
    ``commit.folder(path, owned=...)`` give temporaries; on success all are renamed in at once.

    On any failure the temporaries are removed and nothing at the destinations changes; a full
    disk is one sentence (:func:`sivae._commit.no_space`).
    """
    commit = Commit()
    try:
        yield commit
        commit.commit()
    except Exception as err:
        if is_no_space(err) and commit.entries:
            raise no_space(commit.entries[0].dest) from None
        raise
    finally:
        commit.discard()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed and renamed over it.

    Creates missing parent folders. The caller checked the destination (:func:`check_destination`);
    with ``overwrite=False`` a ``path`` that appeared meanwhile is still refused, not replaced.
    """
    with atomic_outputs() as commit:
        yield commit.file(Path(path), overwrite=overwrite)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, owned_markers: Iterable[str],
                  owned_allowed: str | None = None) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path`` whole.

    An existing ``path`` is replaced only when it is a folder of ours (:func:`is_owned_folder`);
    the old folder is moved aside and deleted only after the new one is in place.
    """
    markers = tuple(owned_markers)
    with atomic_outputs() as commit:
        yield commit.folder(Path(path), owned=lambda p: is_owned_folder(p, markers, owned_allowed))


@contextlib.contextmanager
def hdf5_file(path: Path, *, estimate: int) -> Iterator[Any]:
    """An ``h5py.File`` to fill, written to ``path`` (a temporary of :func:`atomic_file`) on exit.

    Files of up to a few GB are built in memory and then written with ordinary, error-checked
    writes: HDF5 writing to a full disk fails while closing the file and then crashes the process
    (h5py issues #914, #2160), so it must never see a failed write. Larger files (``estimate``
    bytes) are written directly after a free-space check with a margin.
    """
    import h5py

    if estimate > _in_memory_limit():
        ensure_space(path, int(estimate * 1.1) + 2**20)
        with h5py.File(path, "w") as handle:
            yield handle
        return
    image = io.BytesIO()
    with h5py.File(image, "w") as handle:
        yield handle
    write_bytes(path, image.getbuffer())


def write_anndata(adata: Any, path: Path) -> None:
    """Write ``adata`` as an h5ad file at ``path`` (a temporary of :func:`atomic_file`), safely
    on a full disk (:func:`hdf5_file`)."""
    import anndata

    adata.strings_to_categoricals()  # as AnnData.write_h5ad does
    with hdf5_file(path, estimate=_anndata_bytes(adata)) as handle:
        anndata.io.write_elem(handle, "/", adata)


def _anndata_bytes(adata: Any) -> int:
    import numpy as np
    import scipy.sparse as sp

    def size(x: Any) -> int:
        if sp.issparse(x):
            return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
        return int(getattr(x, "nbytes", 0))

    arrays = [adata.X, *adata.layers.values(), *adata.obsm.values(), *adata.varm.values(),
              *adata.obsp.values(), *adata.varp.values()]
    frames = sum(int(np.sum(df.memory_usage(deep=True))) for df in (adata.obs, adata.var)
                 if hasattr(df, "memory_usage"))
    return sum(size(x) for x in arrays if x is not None) + frames


def _in_memory_limit() -> int:
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 8 * 2**30
    return min(2 * 2**30, physical // 8)
