"""Rows of a CSR matrix inside an .h5ad file, read from disk per minibatch.

`BackedCellMatrix` has `loaders.CellMatrix`'s interface, so the trainer and the samplers use an
on-disk matrix as they use an in-memory one; memory grows with the batch and with 8 bytes per
cell for the row pointers, never with the matrix. A `RowTransform` turns each batch of raw
stored values into model input (normalisation, log1p, kept features, z-score) as it is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from numpy.typing import ArrayLike

try:  # anndata >= 0.11 keeps its element readers in anndata.io
    from anndata.io import read_elem
except ImportError:  # pragma: no cover
    from anndata.experimental import read_elem

from .._constants import KEYS
from .._errors import InputError
from .._inputs import check_input_file
from .structure import check_compressed, check_dtype
from .transform import RowTransform

__all__ = ["BackedCellMatrix", "backed_matrix", "is_backed", "read_backed", "training_matrix"]

# HDF5's chunk cache per dataset: enough to keep the chunks of one batch of a compressed file.
_CHUNK_CACHE_BYTES = 64 * 2**20
_ROW_SUMS_STEP = 2**22  # stored values summed per step by row_sums (16 MB of float32)


class BackedCellMatrix:
    """Rows of the CSR ``X`` (or a layer) of an ``.h5ad`` file, read from disk on demand.

    A drop-in for `sivae.data.loaders.CellMatrix`: ``rows(idx)`` returns the requested rows
    densified as a float32 tensor, in the order of ``idx`` (duplicates allowed), reading only the
    stored values of those rows. The row pointers (8 bytes per cell) are held in memory; values
    and column indices stay on disk. A ``transform`` preprocesses each batch as it is read, so
    the file can keep raw sparse counts.

    Parameters
    ----------
    path
        An ``.h5ad`` file whose matrix is stored as CSR (anndata's ``csr_matrix`` encoding),
        uncompressed or compressed with a filter this h5py can read (gzip, lzf, ...).
    layer
        Read ``layers[layer]`` instead of ``X``.
    transform
        Applied to every batch of stored rows (`sivae.data.transform.RowTransform`); ``shape``
        and ``n_features`` are those of its output.

    Raises
    ------
    InputError
        If the file is missing or not HDF5, the matrix is missing, dense or not CSR, a dataset
        uses a compression filter that is not available, the stored arrays disagree with the
        matrix's shape or with ``obs``/``var``, or ``transform`` does not fit the matrix.
    """

    # rows this process has read from files, over all matrices: a measure of each torchrun
    # rank's share of the work (tests/test_distributed.py), not used by the package itself
    rows_read: ClassVar[int] = 0

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layer: str | None = None,
        transform: RowTransform | None = None,
    ) -> None:
        self.path = Path(path)
        self.key = "X" if layer is None else f"layers/{layer}"
        self._file: h5py.File | None = None
        self._pid = -1
        group = self._group()
        try:
            self.stored_shape = _check_csr(group, self.path, self.key)
            _check_annotations(self._handle(), self.path, self.key, self.stored_shape)
            where = f"{self.key} of {str(self.path)!r}"
            check_dtype(group["data"].dtype, where)
            # the column indices are checked batch by batch as they are read (_read_rows)
            check_compressed(group["indptr"], group["indices"], group["data"].shape[0], self.stored_shape,
                             "csr", where, scan_indices=False)
            self._indptr = np.asarray(group["indptr"][:], dtype=np.int64)  # (C + 1,)
            if transform is not None:
                transform.check(*self.stored_shape)
        except BaseException:
            self.close()
            raise
        self.transform = transform
        n_stored = self.stored_shape[1]
        self.shape = (self.stored_shape[0], n_stored if transform is None else transform.n_features(n_stored))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    def rows(self, idx: ArrayLike) -> torch.Tensor:
        """Dense float32 rows ``idx`` in the order given, (len(idx), F)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} cells")
        wanted, inverse = np.unique(idx % max(len(self), 1), return_inverse=True)
        # un-sort while still sparse: a row gather costs O(values), a dense one O(batch x F)
        block = self._read_rows(wanted)[inverse.reshape(-1)]
        if self.transform is None:
            return torch.from_numpy(block.toarray())  # (len(idx), F)
        return torch.from_numpy(self.transform.apply(block, idx % max(len(self), 1)))

    def row_sums(self) -> np.ndarray:
        """Per-cell totals of all stored values, before any ``transform`` (library sizes), (C,)."""
        data = self._group()["data"]
        totals = np.zeros(len(self), dtype=np.float64)
        nnz = int(self._indptr[-1])
        for start in range(0, nnz, _ROW_SUMS_STEP):
            stop = min(start + _ROW_SUMS_STEP, nnz)
            running = np.concatenate([[0.0], np.cumsum(data[start:stop], dtype=np.float64)])
            # rows whose stored values overlap [start, stop), and their bounds inside it
            first = int(np.searchsorted(self._indptr, start, side="right")) - 1
            last = int(np.searchsorted(self._indptr, stop, side="left"))
            bounds = np.clip(self._indptr[first : last + 1], start, stop) - start
            totals[first:last] += running[bounds[1:]] - running[bounds[:-1]]
        return totals.astype(np.float32)

    def stored_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as stored, untransformed, as one CSR block."""
        return self._read_rows(np.arange(start, stop))

    def row_chunks(self, max_values: int) -> list[tuple[int, int]]:
        """Bounds of consecutive row blocks holding at most ``max_values`` stored values each
        (a row with more is a block of its own)."""
        bounds, start = [], 0
        while start < len(self):
            stop = int(np.searchsorted(self._indptr, self._indptr[start] + max_values, side="right")) - 1
            stop = min(max(stop, start + 1), len(self))
            bounds.append((start, stop))
            start = stop
        return bounds

    def var_names(self) -> pd.Index:
        """The feature names stored in the file's ``var``, or positions when it has none."""
        f = self._handle()
        if "var" not in f:
            return pd.Index(np.arange(self.stored_shape[1]).astype(str))
        return read_elem(f["var"]).index

    def close(self) -> None:
        """Close the file; a later read opens it again."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> BackedCellMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # an open HDF5 handle cannot cross processes (DataLoader workers, DDP spawn): reopen there
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, -1
        return state

    def __repr__(self) -> str:
        return f"BackedCellMatrix({str(self.path)!r}, {self.key}, shape={self.shape})"

    # -- reading ----------------------------------------------------------------------------------
    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = _open(self.path)
            self._pid = os.getpid()
        return self._file

    def _group(self) -> h5py.Group:
        f = self._handle()
        if self.key not in f:
            layers = ", ".join(f.get("layers", {})) or "none"
            where = "" if self.key == "X" else f" (layers: {layers})"
            self.close()
            raise InputError(f"{str(self.path)!r} has no {self.key}{where}; "
                             "name a matrix the file holds")
        return f[self.key]

    def _read_rows(self, wanted: np.ndarray) -> sp.csr_matrix:
        """The CSR rows ``wanted`` (sorted, unique), reading runs of adjacent rows in one slice."""
        group = self._group()
        BackedCellMatrix.rows_read += len(wanted)
        starts, stops = self._indptr[wanted], self._indptr[wanted + 1]  # (R,) each
        indptr = np.zeros(len(wanted) + 1, dtype=np.int64)
        np.cumsum(stops - starts, out=indptr[1:])
        spans = _runs(starts, stops)
        data = _read_spans(group["data"], spans, int(indptr[-1]), np.float32)
        indices = _read_spans(group["indices"], spans, int(indptr[-1]), np.int64)
        shape = (len(wanted), self.stored_shape[1])
        # a column index past the last column would make scipy write outside the batch's arrays
        check_compressed(indptr, indices, len(data), shape, "csr", f"{self.key} of {str(self.path)!r}")
        return sp.csr_matrix((data, indices, indptr), shape=shape)


def read_backed(path: str | os.PathLike[str], *, layer: str | None = None) -> AnnData:
    """Open an ``.h5ad`` for out-of-core training: obs and var in memory, the matrix left on disk.

    The result has no ``X``; ``sivae.pp.preprocess`` (raw counts) or ``sivae.pp.scale_features``
    (normalised values) computes its scaling in passes over the file, and `sivae.SIVAE` then reads
    minibatches of cells from the file. Memory grows with obs, var and 8 bytes per cell, never
    with the matrix.

    Parameters
    ----------
    path
        An ``.h5ad`` file whose ``X`` (or ``layers[layer]``) is stored as CSR.
    layer
        Train on ``layers[layer]`` instead of ``X``.

    Returns
    -------
    AnnData with the file's obs and var and ``uns[KEYS.BACKED]`` = {"path", "layer"}.

    Raises
    ------
    InputError
        If the file is not an ``.h5ad``, or its matrix is missing, dense, CSC, compressed with an
        unavailable filter, or inconsistent with obs/var.
    """
    from .validate import check_unique_names

    path = Path(path)
    if path.suffix.lower() != ".h5ad":
        raise InputError(f"backed input must be an .h5ad file, and {str(path)!r} is not; convert "
                         "it with sivae.read(path).write_h5ad('data.h5ad') and pass that file")
    with BackedCellMatrix(path, layer=layer) as matrix:
        f = matrix._handle()
        n_cells, n_features = matrix.stored_shape
        obs = read_elem(f["obs"]) if "obs" in f else pd.DataFrame(index=np.arange(n_cells).astype(str))
        var = read_elem(f["var"]) if "var" in f else pd.DataFrame(index=matrix.var_names())
    adata = AnnData(obs=obs, var=var)
    check_unique_names(adata)
    adata.uns[KEYS.BACKED] = {"path": str(path.resolve()), "layer": layer or ""}
    return adata


def is_backed(adata: AnnData) -> bool:
    """True for an AnnData from `read_backed` (its matrix is on disk)."""
    return isinstance(adata, AnnData) and adata.X is None and KEYS.BACKED in adata.uns


def backed_matrix(adata: AnnData, *, transform: RowTransform | None = None) -> BackedCellMatrix:
    """The on-disk matrix behind an AnnData from `read_backed`, checked against its cells."""
    if not is_backed(adata):
        raise InputError("adata has no matrix on disk; open the file with sivae.read_backed(path)")
    record = adata.uns[KEYS.BACKED]
    matrix = BackedCellMatrix(record["path"], layer=record.get("layer") or None, transform=transform)
    if len(matrix) != adata.n_obs:
        matrix.close()
        raise InputError(f"{record['path']!r} holds {len(matrix)} cells but adata has {adata.n_obs}; "
                         "a backed AnnData keeps all the file's cells, so open it again with "
                         "sivae.read_backed (subset cells by writing a new file)")
    return matrix


def training_matrix(adata: AnnData) -> BackedCellMatrix:
    """The model input of a preprocessed backed AnnData: its file, normalised and z-scored per batch."""
    info = adata.uns.get(KEYS.PREPROCESS, {})
    if not info.get("backed") or KEYS.FEATURE_MEAN not in adata.var or KEYS.FEATURE_STD not in adata.var:
        raise InputError("a backed AnnData is z-scored per batch from statistics of the whole file; "
                         "run sivae.pp.preprocess (raw counts) or sivae.pp.scale_features "
                         "(normalised values) on it first")
    with backed_matrix(adata) as raw:
        position = pd.Index(raw.var_names()).get_indexer(adata.var_names)
    if np.any(position < 0):
        raise InputError("adata's features are not all in its file; open it again with sivae.read_backed")
    counts = bool(info.get("raw_counts"))
    if counts and KEYS.LIBRARY_SIZE not in adata.obs:
        raise InputError(f"adata.obs lacks {KEYS.LIBRARY_SIZE!r}, the library sizes sivae.pp.preprocess "
                         "records; run it again")
    transform = RowTransform(
        library_size=adata.obs[KEYS.LIBRARY_SIZE].to_numpy() if counts else None,
        target_sum=float(info.get("target_sum") or 1e4), log1p=counts, columns=position,
        mean=adata.var[KEYS.FEATURE_MEAN].to_numpy(), std=adata.var[KEYS.FEATURE_STD].to_numpy(),
        max_value=info.get("max_value"),
    )
    return backed_matrix(adata, transform=transform)


def _runs(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """The requested rows' stored values as disjoint [begin, end) spans, adjacent rows merged."""
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    if len(starts) == 0:
        return []
    breaks = np.flatnonzero(starts[1:] != stops[:-1]) + 1
    return list(zip(starts[np.r_[0, breaks]].tolist(), stops[np.r_[breaks - 1, -1]].tolist()))


def _read_spans(
    dataset: h5py.Dataset, spans: list[tuple[int, int]], total: int, dtype: type
) -> np.ndarray:
    """The values of ``spans`` concatenated, (total,)."""
    out = np.empty(total, dtype=dtype)
    at = 0
    # one slice per span: measured faster than one read of the spans' union selection in HDF5
    for begin, end in spans:
        out[at : at + end - begin] = dataset[begin:end]
        at += end - begin
    return out


# -- checks ---------------------------------------------------------------------------------------
def _open(path: Path) -> h5py.File:
    check_input_file(path, what="backed input")
    try:
        return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    except OSError as err:
        raise InputError(f"{str(path)!r} is not a readable HDF5 (.h5ad) file ({err}); "
                         "re-export or re-download it") from err


def _check_csr(group: h5py.Group | h5py.Dataset, path: Path, key: str) -> tuple[int, int]:
    where = f"{key} of {str(path)!r}"
    matrix = "adata.X" if key == "X" else f"adata.layers[{key.split('/', 1)[1]!r}]"
    hint = (f"convert it with {matrix} = scipy.sparse.csr_matrix({matrix}) and write the file "
            "again with adata.write_h5ad")
    if isinstance(group, h5py.Dataset):
        raise InputError(f"{where} is a dense matrix, and backed training needs a CSR matrix; "
                         f"{hint}")
    encoding = group.attrs.get("encoding-type", group.attrs.get("h5sparse_format", ""))
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    if encoding not in ("csr_matrix", "csr"):
        kind = {"csc_matrix": "CSC", "csc": "CSC"}.get(encoding, repr(encoding or "unknown"))
        raise InputError(f"{where} is stored as {kind}, and backed training needs a CSR matrix; "
                         f"{hint}")
    missing = [name for name in ("data", "indices", "indptr") if name not in group]
    shape = group.attrs.get("shape", group.attrs.get("h5sparse_shape"))
    if missing or shape is None or len(shape) != 2:
        lacks = ", ".join(missing) if missing else "a two-dimensional shape"
        raise InputError(f"{where} is an incomplete CSR matrix (no {lacks}); write it again "
                         "with anndata")
    for name in ("data", "indices", "indptr"):
        _check_filters(group[name], f"{key}/{name} of {str(path)!r}")
    return int(shape[0]), int(shape[1])


def _check_filters(dataset: h5py.Dataset, where: str) -> None:
    """Refuse a dataset compressed with a filter this HDF5 library cannot decode."""
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            label = name.decode(errors="replace") if isinstance(name, bytes) and name else ""
            raise InputError(
                f"{where} is compressed with HDF5 filter {code}{f' ({label})' if label else ''}, "
                "which this h5py cannot read; rewrite the file uncompressed or with gzip or lzf "
                "(e.g. adata.write_h5ad(path, compression='gzip'))"
            )


def _check_annotations(f: h5py.File, path: Path, key: str, shape: tuple[int, int]) -> None:
    # obs and var, when the file has them, must agree with the matrix
    for axis, name in ((0, "obs"), (1, "var")):
        if name not in f or not isinstance(f[name], h5py.Group):
            continue
        index = f[name].attrs.get("_index")
        if index is None or index not in f[name]:
            continue
        n = f[name][index].shape[0]
        if n != shape[axis]:
            raise InputError(f"{key} of {str(path)!r} is {shape[0]} x {shape[1]} but {name} has "
                             f"{n} entries; the file is inconsistent, so write it again")
