"""Several outputs replaced together, all new or all old, even across a kill; and a full disk said so.

A run that writes more than one output (``sivae fit``: the h5ad and the model folder), or
replaces a folder (which no single rename can do), commits through :class:`Commit`:

1. every output is written whole under a hidden temporary name beside it
   (``.NAME.sivae-PID-RANDOM``) and flushed to disk;
2. a journal naming every (destination, temporary, moved-aside) triple is written beside each
   destination (``.NAME.sivae-commit-PID-RANDOM``): once all copies exist the commit is decided;
3. each old folder is moved aside (``.NAME.sivae-aside-PID-RANDOM``), each temporary renamed in;
4. the moved-aside folders and the journals are deleted.

A kill before step 2 completes leaves the old outputs untouched and temporaries that the next
write or read of the place removes; a kill after it leaves a journal that the next write or read
(:func:`recover`) rolls forward to the new outputs. No moved-aside folder is ever deleted before
its replacement is in place, and none is deleted by anyone but the run that moved it aside, or
by the roll-forward of that run's decided commit.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import InputError

_TMP_TAG = "sivae"
_JOURNAL = "sivae-commit"
_ASIDE = "sivae-aside"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tmp_prefix(path: Path, tag: str = _TMP_TAG) -> str:
    return f".{path.name}.{tag}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's live process; absurd pids: keep
        return True
    return True


def _dead_siblings(path: Path, tag: str) -> list[Path]:
    """Hidden names ``.NAME.TAG-PID-...`` beside ``path`` whose writing process has died."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(tag)}-(\d+)-[^/]*$")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        siblings = sorted(parent.iterdir())
    except OSError:
        return []
    dead = []
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            dead.append(sibling)
    return dead


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename after it is atomic on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- a full disk -----------------------------------------------------------------------------------
def _mount_point(path: Path) -> str:
    p = Path(os.path.abspath(path))
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def _free_bytes(path: Path) -> int | None:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):  # not every platform tells
        return None
    return st.f_bavail * st.f_frsize


def _megabytes(n: float) -> str:
    return f"{max(n, 1) / 2**20:,.1f} MB"


def no_space(path: Path, needed: int | None = None) -> InputError:
    """The one sentence for a write that does not fit on its filesystem."""
    free = _free_bytes(path.parent)
    need = f"{_megabytes(needed)} needed" if needed else "more space needed"
    have = "" if free is None else f", {_megabytes(free)} free"
    return InputError(f"no space left on {_mount_point(path.parent)} writing {str(path)!r}: {need}{have}; "
                      "free some space there or write to another place")


def is_no_space(err: BaseException) -> bool:
    """True for the errors a full disk (or quota) gives, raw or wrapped by a library."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text or "errno = 28" in text


def ensure_space(path: Path, needed: int) -> None:
    """Refuse now, in one sentence, a write of ``needed`` bytes that cannot fit beside ``path``."""
    free = _free_bytes(path.parent)
    if free is not None and needed > free:
        raise no_space(path, needed)


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` with ordinary, error-checked writes (after a space check)."""
    ensure_space(path, len(data))
    with open(path, "wb") as handle:
        handle.write(data)


# -- commits ---------------------------------------------------------------------------------------
@dataclass
class _Entry:
    dest: Path
    tmp: Path
    folder: bool
    overwrite: bool
    owned: object = None  # folders: a callable telling whether an existing dest is ours to replace
    aside: Path | None = None


@dataclass
class Commit:
    """Outputs written under temporary names and renamed in together (see the module's docstring)."""

    entries: list[_Entry] = field(default_factory=list)
    decided: bool = False  # every journal is written: from here on, only forward

    def file(self, path: Path, *, overwrite: bool) -> Path:
        """A new temporary file beside ``path``, to be renamed over it at the commit."""
        path.parent.mkdir(parents=True, exist_ok=True)
        recover(path)
        fd, name = tempfile.mkstemp(prefix=tmp_prefix(path), dir=path.parent)
        os.close(fd)
        self.entries.append(_Entry(path, Path(name), folder=False, overwrite=overwrite))
        return Path(name)

    def folder(self, path: Path, *, owned) -> Path:
        """A new temporary folder beside ``path``; ``owned(path)``: may an existing one be replaced."""
        path.parent.mkdir(parents=True, exist_ok=True)
        recover(path)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(path), dir=path.parent))
        self.entries.append(_Entry(path, tmp, folder=True, overwrite=True, owned=owned))
        return tmp

    def discard(self) -> None:
        if self.decided:  # a failure after the decision: the next run rolls it forward
            return
        for entry in self.entries:
            _delete(entry.tmp)

    def commit(self) -> None:
        """Check every destination again, decide (journals), rename, clean up."""
        self._finish_temporaries()
        for entry in self.entries:
            there = entry.dest.exists() or entry.dest.is_symlink()
            if there and not entry.folder and not entry.overwrite:
                raise InputError(f"{str(entry.dest)!r} appeared while this run was writing (another run?); "
                                 "it is left as it is: pass --force (overwrite=True) to replace it")
            if there and entry.folder and not entry.owned(entry.dest):
                raise InputError(f"{str(entry.dest)!r} appeared while writing and is not a folder sivae "
                                 "wrote; it is left as it is, choose another path")
        if len(self.entries) == 1 and not self.entries[0].folder:
            os.replace(self.entries[0].tmp, self.entries[0].dest)  # one rename: atomic already
            return
        for entry in self.entries:
            if entry.folder:
                entry.aside = entry.dest.parent / (tmp_prefix(entry.dest, _ASIDE) + os.urandom(4).hex())
        journals = self._write_journals()
        self.decided = True
        _roll_forward(self.entries, journals)

    def _finish_temporaries(self) -> None:
        mask = _umask()
        for entry in self.entries:
            if entry.folder:
                os.chmod(entry.tmp, 0o777 & ~mask)  # mkdtemp makes 0700
                for child in entry.tmp.iterdir():
                    os.chmod(child, 0o666 & ~mask)
                    fsync_path(child)
            else:
                os.chmod(entry.tmp, 0o666 & ~mask)  # mkstemp makes 0600
                fsync_path(entry.tmp)

    def _write_journals(self) -> list[Path]:
        journals = [e.dest.parent / (tmp_prefix(e.dest, _JOURNAL) + os.urandom(4).hex()) for e in self.entries]
        record = {"entries": [{"dest": str(e.dest.absolute()), "tmp": str(e.tmp.absolute()),
                               "aside": None if e.aside is None else str(e.aside.absolute()),
                               "folder": e.folder} for e in self.entries],
                  "journals": [str(j.absolute()) for j in journals]}
        text = json.dumps(record).encode()
        try:
            for entry, journal in zip(self.entries, journals):  # each complete or absent
                fd, name = tempfile.mkstemp(prefix=tmp_prefix(entry.dest), dir=journal.parent)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(text)
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(name, journal)
                finally:
                    Path(name).unlink(missing_ok=True)
        except BaseException:  # undecided: take back the copies written
            for journal in journals:
                journal.unlink(missing_ok=True)
            raise
        return journals


def _roll_forward(entries: list[_Entry], journals: list[Path]) -> None:
    for entry in entries:
        if not (entry.tmp.exists() or entry.tmp.is_symlink()):
            continue  # renamed in already
        if entry.folder and (entry.dest.exists() or entry.dest.is_symlink()):
            if entry.aside is None or (entry.aside.exists() or entry.aside.is_symlink()):
                continue  # cannot happen in our order; never lose what is there
            os.replace(entry.dest, entry.aside)
        os.replace(entry.tmp, entry.dest)
    for entry in entries:  # only now are the old folders no longer needed
        if entry.aside is not None and (entry.aside.exists() or entry.aside.is_symlink()):
            doomed = entry.aside.parent / (tmp_prefix(entry.dest) + "done-" + os.urandom(4).hex())
            os.replace(entry.aside, doomed)  # a half-deleted folder never sits under the aside name
            _delete(doomed)
    for journal in journals:
        journal.unlink(missing_ok=True)


def recover(path: Path) -> None:
    """Finish or undo what a killed sivae run left beside ``path``; remove its temporaries.

    A decided commit (every journal copy present) is rolled forward; an undecided one (a copy
    missing) is dropped, its temporaries with it. A folder moved aside by an older sivae (inside
    ``.NAME.sivae-PID-*/old``) is renamed back when ``path`` is missing, and kept otherwise.
    """
    for journal in _dead_siblings(path, _JOURNAL):
        try:
            _recover_journal(journal)
        except OSError:  # e.g. a read-only folder: leave it all for a run that may write there
            return
    for stale in _dead_siblings(path, _TMP_TAG):
        old = stale / "old"
        if stale.is_dir() and not stale.is_symlink() and old.is_dir():
            if path.exists() or path.is_symlink():
                warnings.warn(f"{str(old)!r} holds an older {path.name} moved aside by a killed sivae "
                              "run; sivae leaves it there: delete it when you no longer need it",
                              UserWarning, stacklevel=3)
                continue
            try:
                os.replace(old, path)
            except OSError:
                continue
        try:
            _delete(stale)
        except OSError:
            pass


def recover_inside(folder: Path) -> None:
    """:func:`recover` for every name inside ``folder`` that a killed sivae run left temporaries of
    (a checkpoint folder's ``.checkpoint.json.sivae-PID-*``)."""
    pattern = re.compile(rf"^\.(.+)\.{_TMP_TAG}-(?:commit-|aside-)?\d+-[^/]*$")
    try:
        names = {m.group(1) for entry in folder.iterdir() if (m := pattern.match(entry.name))}
    except OSError:
        return
    for name in sorted(names):
        recover(folder / name)


def _recover_journal(journal: Path) -> None:
    try:
        record = json.loads(journal.read_text())
        entries = [_Entry(Path(e["dest"]), Path(e["tmp"]), folder=bool(e["folder"]), overwrite=True,
                          aside=None if e["aside"] is None else Path(e["aside"])) for e in record["entries"]]
        journals = [Path(j) for j in record["journals"]]
    except (ValueError, KeyError, TypeError):  # not ours after all: leave it
        return
    if all(j.exists() for j in journals):
        _roll_forward(entries, journals)
    else:  # undecided: no rename happened, the old outputs stand
        for entry in entries:
            _delete(entry.tmp)
        for j in journals:
            j.unlink(missing_ok=True)
