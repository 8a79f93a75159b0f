"""Large sparse count matrices with planted cell types, written to .h5ad a chunk of cells at a time.

`simulate_large` makes the data of the scale benchmarks (a million cells x 28,000 genes) without
ever holding the matrix in memory: cells are drawn in fixed blocks, each block from its own
generator, and appended to the file's CSR ``X`` as they come.

The model: every gene belongs to one of ``n_programs`` programs (contiguous blocks of genes) and
every cell to one of as many cell types; type t multiplies the means of program t's genes by
``fold``. The count of gene g in cell c is Poisson with mean ``m * s_c * w_g * (fold if g is in
c's program)``, where w_g is log-normal (heavy-tailed gene means, mean 1), s_c a log-normal
library size (mean 1) and m is set so that the expected fraction of non-zero entries is
``density``. Counts are drawn as a cell's Poisson total split multinomially over its genes (the
same law as independent Poissons), which costs O(counts) rather than O(genes) per cell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtri
from tqdm.auto import tqdm

try:  # anndata >= 0.11 keeps its element writers in anndata.io
    from anndata.io import write_elem
except ImportError:  # pragma: no cover
    from anndata.experimental import write_elem

from .. import _params
from .._constants import KEYS
from .._errors import InputError
from .._files import atomic_file, check_destination, hdf5_file, locked

__all__ = ["simulate_large"]

# Cells per generator block: the unit of reproducibility. Block b is drawn from a generator seeded
# by (seed, b), so the matrix depends on the seed and sizes only, never on chunk_cells.
_BLOCK_CELLS = 1_000
# Fewer cells per block when each cell carries many counts, to bound a block's memory (~100 MB).
_MAX_BLOCK_COUNTS = 4_000_000
_GENE_SIGMA = 1.0  # log-normal spread of the per-gene base means w_g
_LIBRARY_SIGMA = 0.4  # log-normal spread of the per-cell library sizes s_c
_MAX_DENSITY = 0.5  # beyond this a CSR file is larger than a dense one
_HDF5_CHUNK = 2**16  # elements per HDF5 chunk of data and indices (256 kB)
_COMPRESSIONS = (None, "gzip", "lzf")


@dataclass(frozen=True)
class _Plan:
    """Everything about the matrix that does not depend on the cell."""

    n_features: int
    program: np.ndarray  # (F,) the program (cell type) each gene belongs to
    cdf: np.ndarray  # (T * F,) type t's gene-choice cdf, plus t, types concatenated
    mean_total: np.ndarray  # (T,) expected counts of a type-t cell of library size 1
    block_cells: int


def simulate_large(
    path: str | os.PathLike[str],
    n_cells: int,
    n_features: int,
    *,
    n_programs: int = 10,
    chunk_cells: int = 10_000,
    density: float = 0.05,
    fold: float = 4.0,
    compression: str | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write a cells x features sparse count matrix with planted cell types to an ``.h5ad``.

    Cells are generated in fixed blocks and written ``chunk_cells`` at a time to a CSR ``X``
    (float32 integer counts, int32 indices, int64 indptr), so memory stays bounded by the chunk
    (plus a few bytes per cell for the labels) whatever ``n_cells`` is. The same ``seed`` and sizes give the same matrix for any
    ``chunk_cells``. The file is written under a temporary name and renamed when complete, so
    an interrupted run leaves no half-written ``path``.

    Parameters
    ----------
    path
        The ``.h5ad`` file to write.
    n_cells, n_features
        Size of the matrix.
    n_programs
        Number of cell types, and of gene programs (contiguous blocks of genes), one per type.
    chunk_cells
        Cells written per step; larger is faster and holds more in memory.
    density
        Expected fraction of non-zero entries, in (0, 0.5].
    fold
        Factor by which a cell type raises the means of its program's genes (1: no structure).
    compression
        HDF5 compression of ``X``: None (fastest to read back), ``"gzip"`` or ``"lzf"``.
    seed
        Seed of the generator, a non-negative integer.
    force
        Overwrite ``path`` if it exists.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        ``path``. The file holds ``X``; ``obs[KEYS.CELL_TYPE]`` (categorical ``"type0"``...);
        ``var[KEYS.PROGRAM]`` (the cell type whose program holds the gene, same categories);
        ``uns[KEYS.SIMULATE_LARGE]`` (the parameters).

    Raises
    ------
    InputError
        If a size is not a positive integer, ``n_programs`` exceeds ``n_features``,
        ``density``, ``fold``, ``compression`` or ``seed`` is out of range, or ``path`` does not
        end in ``.h5ad``, exists (without ``force``) or cannot be written.
    """
    _check_args(n_cells, n_features, n_programs, chunk_cells, density, fold, compression, seed)
    target = _check_target(Path(path), force=force)
    plan = _plan(n_features, n_programs, density, fold, seed)
    # X's non-zeros (float32 value + int32 index), indptr, and about 64 bytes of names per row
    estimate = int(n_cells * n_features * density * 8 + 8 * n_cells + 64 * (n_cells + n_features))
    with locked(target), atomic_file(target, overwrite=force) as tmp:
        with hdf5_file(tmp, estimate=estimate) as f:
            types = _write_counts(f, plan, n_cells, chunk_cells, seed, compression, progress)
            _write_annotations(f, plan, types, n_programs, density=density, fold=fold, seed=seed)
    return target


def _check_args(
    n_cells: object, n_features: object, n_programs: object, chunk_cells: object,
    density: object, fold: object, compression: object, seed: object,
) -> None:
    sizes = {"n_cells": n_cells, "n_features": n_features, "n_programs": n_programs,
             "chunk_cells": chunk_cells}
    for name, value in sizes.items():
        _params.count(value, name)
    if n_programs > n_features:  # type: ignore[operator]
        raise InputError(f"n_programs ({n_programs}) exceeds n_features ({n_features}); each "
                         "program needs at least one gene, so lower n_programs")
    number = isinstance(density, Real) and not isinstance(density, bool)
    if not number or not 0 < density <= _MAX_DENSITY:  # type: ignore[operator]
        raise InputError(f"density must be a number in (0, {_MAX_DENSITY}], got {density!r}; "
                         "denser data are better stored dense")
    if isinstance(fold, bool) or not isinstance(fold, Real) or not 1 <= fold < np.inf:
        raise InputError(f"fold must be a finite number >= 1, got {fold!r}")
    _params.seed(seed)
    if compression not in _COMPRESSIONS:
        raise InputError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
    # the plan holds (programs x features) float64 and bool tables, a chunk its non-zeros, and
    # every cell its type and name (about 64 bytes) until the annotations are written
    need = 24 * n_programs * n_features + 16 * chunk_cells * n_features * density + 64 * n_cells  # type: ignore[operator]
    _params.check_memory(need, f"{n_cells:,} cells, {n_features:,} features, {n_programs} programs and chunks "
                         f"of {chunk_cells:,} cells", "use fewer cells, features, programs or cells per chunk")
    if n_cells * n_features * density > 2**62:  # type: ignore[operator]
        raise InputError("that many non-zero counts cannot be indexed in an h5ad file; use fewer cells or features")


def _check_target(p: Path, *, force: bool) -> Path:
    if p.suffix.lower() != ".h5ad":
        raise InputError(f"output {str(p)!r} must end in .h5ad")
    return check_destination(p, what="output", overwrite=force)


# -- the model ------------------------------------------------------------------------------------
def _plan(n_features: int, n_programs: int, density: float, fold: float, seed: int) -> _Plan:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    weight = rng.lognormal(0.0, _GENE_SIGMA, n_features)
    weight /= weight.mean()  # w_g, mean 1
    program = np.arange(n_features, dtype=np.int64) * n_programs // n_features
    m = _rate_for_density(weight, fold, n_programs, density)
    up = np.arange(n_programs)[:, None] == program[None, :]  # (T, F)
    rate = m * weight[None, :] * np.where(up, fold, 1.0)  # (T, F) means at library size 1
    mean_total = rate.sum(1)
    cdf = np.cumsum(rate / mean_total[:, None], axis=1)
    cdf[:, -1] = 1.0  # exactly, so type t's segment ends at t + 1
    cdf += np.arange(n_programs)[:, None]
    per_cell = max(1, int(np.ceil(mean_total.mean())))
    block_cells = int(np.clip(_MAX_BLOCK_COUNTS // per_cell, 1, _BLOCK_CELLS))
    return _Plan(n_features, program, cdf.ravel(), mean_total, block_cells)


def _rate_for_density(weight: np.ndarray, fold: float, n_types: int, density: float) -> float:
    """The scale m whose expected fraction of non-zero counts is ``density`` (bisection)."""
    # library sizes at 16 quantiles of their log-normal stand in for the expectation over cells
    z = ndtri((np.arange(16) + 0.5) / 16)
    library = np.exp(_LIBRARY_SIGMA * z - _LIBRARY_SIGMA**2 / 2)

    def nonzero(m: float) -> float:
        # each gene is up (x fold) in one type out of n_types; P(count > 0) = 1 - exp(-mean)
        r = m * library[:, None] * weight[None, :]  # (16, F)
        return float((-np.expm1(-r * fold) - (n_types - 1) * np.expm1(-r)).mean() / n_types)

    lo, hi = 1e-12, 1.0
    while nonzero(hi) < density:
        lo, hi = hi, hi * 10
    for _ in range(60):  # in log space: m spans many orders of magnitude
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if nonzero(mid) < density else (lo, mid)
    return float(np.sqrt(lo * hi))


def _block(plan: _Plan, seed: int, b: int, n_cells: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """Block b's cell types (n,) and counts (n, F), from its own generator."""
    F = plan.n_features
    n = min(plan.block_cells, n_cells - b * plan.block_cells)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, b)))
    types = rng.integers(len(plan.mean_total), size=n)
    library = np.exp(_LIBRARY_SIGMA * rng.standard_normal(n) - _LIBRARY_SIGMA**2 / 2)  # s_c
    totals = rng.poisson(library * plan.mean_total[types])  # (n,) a cell's total count
    cell = np.repeat(np.arange(n, dtype=np.int64), totals)  # (total,) one entry per count
    offset = types[cell]
    # each count picks a gene from its cell type's cdf; the +offset keeps it in that type's segment
    gene = np.searchsorted(plan.cdf, rng.random(cell.size) + offset, side="right") - offset * F
    np.clip(gene, 0, F - 1, out=gene)  # guards float rounding at a segment's very end
    keys, counts = np.unique(cell * F + gene, return_counts=True)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // F, minlength=n), out=indptr[1:])
    X = sp.csr_matrix(
        (counts.astype(np.float32), (keys % F).astype(np.int32), indptr), shape=(n, F)
    )
    return types, X


# -- the file -------------------------------------------------------------------------------------
def _write_counts(
    f: h5py.File, plan: _Plan, n_cells: int, chunk_cells: int, seed: int,
    compression: str | None, progress: bool,
) -> np.ndarray:
    """Append all cells to a CSR group ``X``, chunk_cells at a time; returns the cell types."""
    group = f.create_group("X")
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                        "shape": (0, plan.n_features)})
    expected_nnz = n_cells * float(plan.mean_total.mean())  # an upper bound: counts >= entries
    opts = {"maxshape": (None,), "compression": compression}
    value_chunks = (int(np.clip(expected_nnz, 1024, _HDF5_CHUNK)),)  # small files stay small
    data = group.create_dataset("data", (0,), np.float32, chunks=value_chunks, **opts)
    indices = group.create_dataset("indices", (0,), np.int32, chunks=value_chunks, **opts)
    indptr = group.create_dataset("indptr", data=np.zeros(1, dtype=np.int64),
                                  chunks=(min(n_cells + 1, _HDF5_CHUNK),), **opts)
    types = np.empty(n_cells, dtype=np.int64)
    pending: list[sp.csr_matrix] = []
    n_pending = written = 0
    n_blocks = -(-n_cells // plan.block_cells)
    with tqdm(total=n_cells, unit="cell", unit_scale=True, desc="simulating",
              disable=not progress) as bar:
        for b in range(n_blocks):
            block_types, X = _block(plan, seed, b, n_cells)
            types[b * plan.block_cells : b * plan.block_cells + len(block_types)] = block_types
            pending.append(X)
            n_pending += X.shape[0]
            while n_pending >= chunk_cells or (b == n_blocks - 1 and n_pending):
                stacked = sp.vstack(pending, format="csr")
                chunk, rest = stacked[:chunk_cells], stacked[chunk_cells:]
                _append(data, indices, indptr, chunk)
                written += chunk.shape[0]
                group.attrs["shape"] = (written, plan.n_features)
                bar.update(chunk.shape[0])
                pending, n_pending = ([rest] if rest.shape[0] else []), rest.shape[0]
    return types


def _append(data: h5py.Dataset, indices: h5py.Dataset, indptr: h5py.Dataset,
            X: sp.csr_matrix) -> None:
    nnz, rows = data.shape[0], indptr.shape[0] - 1
    if X.nnz:
        data.resize((nnz + X.nnz,))
        data[nnz:] = X.data
        indices.resize((nnz + X.nnz,))
        indices[nnz:] = X.indices
    indptr.resize((rows + X.shape[0] + 1,))
    indptr[rows + 1 :] = X.indptr[1:].astype(np.int64) + nnz


def _write_annotations(
    f: h5py.File, plan: _Plan, types: np.ndarray, n_programs: int, *,
    density: float, fold: float, seed: int,
) -> None:
    labels = [f"type{t}" for t in range(n_programs)]
    obs = pd.DataFrame(
        {KEYS.CELL_TYPE: pd.Categorical.from_codes(types, labels)},
        index=pd.Index([f"cell{i}" for i in range(len(types))]),
    )
    var = pd.DataFrame(
        {KEYS.PROGRAM: pd.Categorical.from_codes(plan.program, labels)},
        index=pd.Index([f"gene{j}" for j in range(plan.n_features)]),
    )
    uns = {KEYS.SIMULATE_LARGE: {
        "seed": int(seed), "density": float(density), "fold": float(fold),
        "n_programs": int(n_programs), "gene_sigma": _GENE_SIGMA,
        "library_sigma": _LIBRARY_SIGMA, "block_cells": plan.block_cells,
    }}
    f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    write_elem(f, "obs", obs)
    write_elem(f, "var", var)
    for key in ("obsm", "varm", "obsp", "varp", "layers"):
        write_elem(f, key, {})
    write_elem(f, "uns", uns)
