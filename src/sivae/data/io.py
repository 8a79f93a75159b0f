"""Read a cells x features matrix from any common single-cell format, and write h5ad safely.

`read` only reads: it dispatches on the file's format to the library that owns it (anndata,
scanpy) and turns any failure into one `InputError` sentence. Before that library builds a
sparse matrix from an HDF5 file's arrays, their structure is checked (a corrupt one would corrupt
memory inside scipy), and what it returns is checked again (`validate.check_anndata_matrices`).
Checks on the values (NaN, duplicate names, ...) live in `sivae.data.validate` and run later.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

try:  # anndata >= 0.11 keeps its readers in anndata.io
    from anndata import io as _adio
except ImportError:  # pragma: no cover
    _adio = anndata

from .._errors import InputError
from .._files import atomic_file, check_destination, locked, recover_outputs, write_anndata
from .._inputs import check_input_file
from .structure import check_compressed, scipy_index_dtypes
from .validate import anndata_matrices, check_anndata_matrices

__all__ = ["SUPPORTED_FORMATS", "read", "write_h5ad"]

# What `read` accepts, as shown in error messages.
SUPPORTED_FORMATS = (
    ".h5ad",
    ".h5 (10x)",
    ".csv",
    ".tsv",
    ".csv.gz",
    ".tsv.gz",
    ".loom",
    "a 10x mtx folder (matrix.mtx[.gz], features.tsv[.gz] or genes.tsv, barcodes.tsv[.gz])",
)


def _read_table(path: Path, sep: str) -> AnnData:
    try:
        return _adio.read_text(path, delimiter=sep, first_column_names=True)
    except ValueError:
        # anndata says only that a string is not a float: name the column that holds text
        frame = pd.read_csv(path, sep=sep, index_col=0, nrows=1000)  # unparsable: read()'s message
        text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise InputError(f"column {text[0]!r} of {str(path)!r} holds text, not numbers ({len(text)} "
                             "such column(s)); the file must hold cell names in the first column and one "
                             "numeric column per feature") from None
        raise


def _read_csv(path: Path) -> AnnData:
    return _read_table(path, ",")


def _read_tsv(path: Path) -> AnnData:
    return _read_table(path, "\t")


def _read_10x_h5(path: Path) -> AnnData:
    _check_stored_matrices(path)
    return sc.read_10x_h5(path)


def _read_h5ad(path: Path) -> AnnData:
    _check_stored_matrices(path)
    return _adio.read_h5ad(path)


def _check_stored_matrices(path: Path) -> None:
    # every sparse matrix of an HDF5 file (an h5ad's X, layers, raw, obsp, ...; a 10x .h5's
    # matrix), checked on its stored arrays before anndata or scanpy builds one from them
    with h5py.File(path, "r") as f:
        found: list[tuple[str, str, tuple[int, int]]] = []
        f.visititems(lambda name, obj: found.append((name, *layout)) if (layout := _sparse_layout(obj)) else None)
        for name, fmt, shape in found:
            g = f[name]
            check_compressed(g["indptr"], g["indices"], g["data"].shape[0], shape, fmt,
                             f"{name} of {str(path)!r}")


def _sparse_layout(obj: h5py.Group | h5py.Dataset) -> tuple[str, tuple[int, int]] | None:
    # (format, shape) of a group holding a CSR or CSC matrix, in anndata's, h5sparse's or 10x's layout
    if not isinstance(obj, h5py.Group) or not all(isinstance(obj.get(k), h5py.Dataset)
                                                  for k in ("data", "indices", "indptr")):
        return None
    encoding = obj.attrs.get("encoding-type", obj.attrs.get("h5sparse_format", b""))
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    fmt = {"csr_matrix": "csr", "csc_matrix": "csc", "csr": "csr", "csc": "csc"}.get(encoding)
    shape = obj.attrs.get("shape", obj.attrs.get("h5sparse_shape"))
    if fmt is None and isinstance(obj.get("shape"), h5py.Dataset):  # 10x: features x barcodes, CSC
        fmt, shape = "csc", obj["shape"][()]
    if fmt is None or shape is None or np.ndim(shape) != 1 or len(shape) != 2:
        return None
    return fmt, (int(shape[0]), int(shape[1]))


def _read_loom(path: Path) -> AnnData:
    # Loom files name cells and genes in the attributes "CellID" and "Gene" (loompy, velocyto)
    # or, when anndata wrote them, "obs_names" and "var_names"; use whichever is there.
    with h5py.File(path, "r") as f:
        col_attrs = set(f["col_attrs"].keys()) if "col_attrs" in f else set()
        row_attrs = set(f["row_attrs"].keys()) if "row_attrs" in f else set()
    obs_names = "obs_names" if "CellID" not in col_attrs and "obs_names" in col_attrs else "CellID"
    var_names = "var_names" if "Gene" not in row_attrs and "var_names" in row_attrs else "Gene"
    return _adio.read_loom(path, obs_names=obs_names, var_names=var_names)


# suffix (lower case) -> (format name for messages, reader)
_READERS: dict[str, tuple[str, Callable[[Path], AnnData]]] = {
    ".h5ad": ("h5ad", _read_h5ad),
    ".h5": ("10x HDF5", _read_10x_h5),
    ".csv": ("CSV", _read_csv),
    ".csv.gz": ("CSV", _read_csv),
    ".tsv": ("TSV", _read_tsv),
    ".tsv.gz": ("TSV", _read_tsv),
    ".loom": ("loom", _read_loom),
}


def read(path: str | os.PathLike) -> AnnData:
    """Read a cells x features matrix into an AnnData, choosing the reader from the format.

    Parameters
    ----------
    path
        One of: an ``.h5ad`` file (`anndata.io.read_h5ad`); a 10x Genomics ``.h5`` file
        (`scanpy.read_10x_h5`); a 10x mtx folder holding ``matrix.mtx[.gz]``,
        ``features.tsv[.gz]`` (or ``genes.tsv``) and ``barcodes.tsv[.gz]``
        (`scanpy.read_10x_mtx`); a ``.csv`` / ``.tsv`` file (optionally gzipped) with cells as
        rows, cell names in the first column and feature names in the header
        (`anndata.io.read_csv` / `anndata.io.read_text`); a ``.loom`` file
        (`anndata.io.read_loom`).

    Returns
    -------
    AnnData
        The matrix as the library read it: names are not made unique and values are not
        checked here (see `sivae.data.validate`).

    Raises
    ------
    InputError
        If the path does not exist or is not a regular file (a named pipe, a device, ...), its
        format is not one of the supported ones, the file cannot be parsed (truncated or
        corrupt), a sparse matrix in it is corrupt, or ``X`` holds values that are not real
        numbers (text, complex).
    """
    recover_outputs(Path(path))  # a run killed while replacing it: finish or drop that first
    p = check_input_file(path, folder=True)
    if p.is_dir():
        fmt, reader = "10x mtx folder", _read_10x_mtx_dir
    else:
        fmt, reader = _reader_for(p)
    try:
        adata = reader(p)
        for _, matrix in anndata_matrices(adata):
            scipy_index_dtypes(matrix)
        check_anndata_matrices(adata)
        return adata
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # any library failure on a file that exists means it is unreadable
        raise InputError(
            f"could not read {str(p)!r} as {fmt} ({type(err).__name__}: {_first_line(err)}); "
            "the file may be truncated or corrupt, so re-export or re-download it"
        ) from err


def _reader_for(p: Path) -> tuple[str, Callable[[Path], AnnData]]:
    name = p.name.lower()
    # longest suffix first, so "x.csv.gz" is CSV and not an unknown ".gz"
    for suffix in sorted(_READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _READERS[suffix]
    raise InputError(
        f"unknown file format {''.join(p.suffixes) or '(no extension)'!r} for {str(p)!r}; "
        f"supported: {', '.join(SUPPORTED_FORMATS)}"
    )


def _read_10x_mtx_dir(p: Path) -> AnnData:
    # scanpy picks the legacy (v2: plain genes.tsv) or v3 (gzipped features.tsv) layout itself;
    # we only check that one complete layout is there, to name what is missing.
    legacy = ("matrix.mtx", "genes.tsv", "barcodes.tsv")
    v3 = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")
    if (p / "genes.tsv").exists():
        needed = legacy
    elif (p / "features.tsv").exists():
        raise InputError(
            f"10x mtx folder {str(p)!r} holds an uncompressed features.tsv, which scanpy reads "
            "only gzipped; gzip matrix.mtx, features.tsv and barcodes.tsv and read it again"
        )
    elif (p / "features.tsv.gz").exists() or (p / "matrix.mtx.gz").exists():
        needed = v3
    else:
        raise InputError(
            f"{str(p)!r} is a folder but not a 10x mtx folder (no genes.tsv, features.tsv.gz or "
            "matrix.mtx.gz in it); point to a file or to the folder holding the 10x files"
        )
    missing = [f for f in needed if not os.path.lexists(p / f)]
    if missing:
        raise InputError(
            f"10x mtx folder {str(p)!r} lacks {', '.join(missing)}; "
            f"a complete folder holds {', '.join(needed)}"
        )
    for name in needed:
        check_input_file(p / name, what="10x file")
    # make_unique=False: duplicate gene symbols are for validation to refuse, not to hide
    return sc.read_10x_mtx(p, make_unique=False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else "no message"
    return line if len(line) <= 200 else line[:197] + "..."


def write_h5ad(adata: AnnData, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write ``adata`` to an ``.h5ad`` file atomically.

    The data go to a hidden temporary file in the target's folder, which is flushed to disk and
    then renamed over the target with `os.replace`, so an interrupted write never leaves a
    half-written file under ``path``. Missing parent folders are created.

    Parameters
    ----------
    adata
        The AnnData to write.
    path
        Where to write it.
    force
        Overwrite ``path`` if it exists.

    Raises
    ------
    InputError
        If ``path`` exists and ``force`` is False, is a folder, or its folder cannot be
        created or written to.
    """
    check_destination(path, what="output", overwrite=force)
    try:
        with locked(path), atomic_file(path, overwrite=force) as tmp:
            write_anndata(adata, tmp)  # never lets HDF5 hit a full disk (it crashes there)
    except PermissionError as err:
        raise InputError(f"cannot write {str(path)!r} ({err.strerror}); choose a writable location") from err
