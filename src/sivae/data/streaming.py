"""`sivae.pp.preprocess` and `scale_features` for a matrix that stays on disk, in passes over its cells.

An AnnData from `sivae.read_backed` carries obs and var but no matrix. Preprocessing it computes
what the in-memory steps would (library sizes, constant features, highly variable genes, each
feature's mean and standard deviation after log-normalisation) from sums over chunks of stored
rows, never holding more than one chunk, and records them in obs, var and uns. The values
themselves are normalised, log-transformed and z-scored per training batch (`RowTransform`).

Under torchrun each rank reads every world_size-th chunk of rows and the ranks combine their sums
(`sivae.distributed`), so a pass costs each rank its share of the file; every rank ends with the
same statistics, as one process would compute them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from tqdm.auto import tqdm

from .._constants import KEYS
from .._errors import InputError
from ..distributed import my_share, raising_together, reduce_over_ranks
from .backed import BackedCellMatrix, backed_matrix
from .hvg import fallback, seurat_v3_clip, seurat_v3_table, too_few_for_loess
from .record import PreprocessRecord, kept_features, scaled_record, subset_features
from .transform import RowTransform

__all__ = ["preprocess_backed", "scale_backed"]

_CHUNK_VALUES = 2**24  # stored values per chunk of rows in a pass (about 128 MB read)
_N_BINS = 20  # mean bins of the Seurat dispersion ranking, as scanpy's default


@dataclass
class _Moments:
    """Per-feature sums over cells of x and x^2 (implicit zeros add nothing)."""

    n_features: int
    n_cells: int = 0
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.n_features)
        self.total_sq = np.zeros(self.n_features)

    def add(self, block: sp.csr_matrix) -> None:
        values = block.data.astype(np.float64)
        self.total += np.bincount(block.indices, weights=values, minlength=self.n_features)
        self.total_sq += np.bincount(block.indices, weights=values**2, minlength=self.n_features)
        self.n_cells += block.shape[0]

    def combine_ranks(self) -> None:
        """Sums over every rank's cells (a no-op in one process)."""
        self.total = reduce_over_ranks(self.total)
        self.total_sq = reduce_over_ranks(self.total_sq)
        self.n_cells = int(reduce_over_ranks(np.array([self.n_cells]))[0])

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased (ddof=1) variance, as scanpy's and our in-memory steps compute them."""
        n = self.n_cells
        mean = self.total / n
        var = np.maximum(self.total_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
        return mean, var


@dataclass
class _Range:
    """Per-feature minimum and maximum over cells, implicit zeros included."""

    n_features: int
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.low = np.full(self.n_features, np.inf)
        self.high = np.full(self.n_features, -np.inf)

    def add(self, block: sp.csr_matrix) -> None:
        self.low = np.minimum(self.low, block.min(axis=0).toarray().ravel())
        self.high = np.maximum(self.high, block.max(axis=0).toarray().ravel())

    def combine_ranks(self) -> None:
        """Extremes over every rank's cells (a no-op in one process)."""
        self.low = reduce_over_ranks(self.low, "min")
        self.high = reduce_over_ranks(self.high, "max")


def preprocess_backed(
    adata: AnnData,
    *,
    n_top_genes: int | None,
    flavor: str,
    target_sum: float,
    scale: bool,
    max_value: float | None,
    drop_constant: bool,
    progress: bool = True,
    batches: np.ndarray | None = None,
) -> PreprocessRecord:
    """The steps of `sivae.pp.preprocess` on a backed AnnData; returns the record to store.

    Pass 1 checks the counts and finds library sizes, constant features and the counts' moments;
    pass 2 gathers the moments of the normalised and of the log-normalised values of the other
    features, for "seurat_v3" the sums of the counts clipped where pass 1's fit says, and, with
    ``batches`` (each cell's batch code), the normalised moments of each batch. seurat_v3 across
    batches is not computed from a file: with ``batches`` the genes are chosen by "seurat" across
    batches, with a warning.
    """
    if not scale:
        raise InputError("a backed matrix is z-scored per training batch, so preprocess it with "
                         "scale=True (the default)")
    matrix = backed_matrix(adata, transform=None)
    n_features_in = adata.n_vars
    columns = _file_columns(adata, matrix)
    totals, extent, raw = _scan_counts(matrix, columns, progress=progress)
    constant = extent.low == extent.high
    keep = kept_features(constant, drop=drop_constant, where="the backed matrix")
    library_features = tuple(map(str, adata.var_names[keep]))  # the library sizes sum over these
    # normalize_total runs after constant features are dropped: take their counts off the totals
    library = totals - float(extent.high[constant].sum())
    columns = columns[keep]
    selected = n_top_genes is not None and n_top_genes < int(keep.sum())
    if selected and flavor == "seurat_v3" and batches is not None:
        fallback("seurat_v3 across batches is not computed from a backed file")
    v3 = selected and flavor == "seurat_v3" and batches is None
    clipped = _Clipped.fit(*raw.mean_var(), raw.n_cells, keep) if v3 else None
    flavor = ("seurat_v3" if clipped else "seurat") if selected else None
    normalised, logged = _Moments(len(columns)), _Moments(len(columns))
    per_batch = [_Moments(len(columns)) for _ in range(0 if batches is None else int(batches.max()) + 1)]
    normalise = RowTransform(library_size=library, target_sum=target_sum)
    with raising_together():
        for rows, block in _chunks(matrix, RowTransform(columns=columns), "pass 2 of 2: feature statistics",
                                   progress):
            if clipped is not None:
                clipped.add(block)
            block = normalise.sparse_steps(block, rows)  # per-row scaling: the same after selecting columns
            normalised.add(block)
            for b, moments in enumerate(per_batch):
                moments.add(block[batches[rows] == b])
            np.log1p(block.data, out=block.data)
            logged.add(block)
    for moments in (normalised, logged, *per_batch, *([clipped] if clipped else [])):
        moments.combine_ranks()
    subset_features(adata, keep)
    if selected:
        hvg = clipped.table(n_top_genes) if clipped else _seurat_table(*normalised.mean_var(), n_top_genes)
        if per_batch:
            hvg[KEYS.HIGHLY_VARIABLE] = _top_across_batches(per_batch, n_top_genes)
        for name, values in hvg.items():
            adata.var[name] = values.to_numpy()
    mean, var = logged.mean_var()
    chosen = adata.var[KEYS.HIGHLY_VARIABLE].to_numpy() if selected else np.ones(adata.n_vars, bool)
    subset_features(adata, chosen)
    _record_scaling(adata, mean[chosen], var[chosen])
    adata.obs[KEYS.LIBRARY_SIZE] = library
    adata.uns["log1p"] = {"base": None}
    return PreprocessRecord(
        raw_counts=True, scaled=True, backed=True, n_features_in=int(n_features_in),
        n_constant_dropped=int(constant.sum()), target_sum=float(target_sum), log1p=True,
        n_top_genes=None if n_top_genes is None else int(n_top_genes),
        highly_variable_flavor=flavor,
        max_value=None if max_value is None else float(max_value), std_ddof=1, counts_layer=None,
        n_features_out=int(adata.n_vars), library_features=library_features,
    )


def scale_backed(adata: AnnData, *, max_value: float | None, progress: bool = True) -> None:
    """`sivae.pp.scale_features` on a backed AnnData: stored values z-scored per batch.

    One pass gathers each feature's moments; constant features are dropped with a warning
    (a z-scored constant is all zeros, which no model can use).
    """
    matrix = backed_matrix(adata, transform=None)
    columns = _file_columns(adata, matrix)
    moments, extent = _Moments(len(columns)), _Range(len(columns))
    with raising_together():
        for _, block in _chunks(matrix, RowTransform(columns=columns), "feature statistics", progress):
            moments.add(block)
            extent.add(block)
    moments.combine_ranks()
    extent.combine_ranks()
    keep = kept_features(extent.low == extent.high, drop=True, where="the backed matrix")
    mean, var = moments.mean_var()
    subset_features(adata, keep)
    _record_scaling(adata, mean[keep], var[keep])
    adata.uns[KEYS.PREPROCESS] = scaled_record(adata.uns.get(KEYS.PREPROCESS), max_value, backed=True)


# -- passes ---------------------------------------------------------------------------------------
def _chunks(
    matrix: BackedCellMatrix, transform: RowTransform, what: str, progress: bool
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Consecutive blocks of stored rows (at most about _CHUNK_VALUES values each) after the
    sparse steps of ``transform``, refusing NaN and infinite values; under torchrun, this
    rank's share of the blocks."""
    chunks = my_share(matrix.row_chunks(_CHUNK_VALUES))
    bar = tqdm(total=sum(stop - start for start, stop in chunks), disable=not progress, unit="cell",
               desc=what, dynamic_ncols=True)
    try:
        for start, stop in chunks:
            rows = np.arange(start, stop)
            block = transform.sparse_steps(matrix.stored_rows(start, stop), rows)
            if not np.all(np.isfinite(block.data)):
                raise InputError(f"{matrix.key} of {str(matrix.path)!r} holds NaN or infinite "
                                 "values; remove or impute them before training")
            yield rows, block
            bar.update(stop - start)
    finally:
        bar.close()


def _scan_counts(
    matrix: BackedCellMatrix, columns: np.ndarray, *, progress: bool
) -> tuple[np.ndarray, _Range, _Moments]:
    """Pass 1: refuse non-counts; per-cell totals, per-feature minimum, maximum and moments."""
    totals, extent, moments = np.zeros(len(matrix)), _Range(len(columns)), _Moments(len(columns))
    with raising_together():
        for rows, block in _chunks(matrix, RowTransform(columns=columns), "pass 1 of 2: counts", progress):
            if np.any(block.data < 0) or np.any(block.data != np.rint(block.data)):
                raise InputError(
                    f"{matrix.key} of {str(matrix.path)!r} holds negative or non-integer values, so "
                    "it is not raw counts; for normalised data use sivae.pp.scale_features instead "
                    "(on the command line: sivae fit --no-preprocess)"
                )
            totals[rows] = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
            extent.add(block)
            moments.add(block)
    extent.combine_ranks()
    moments.combine_ranks()
    return reduce_over_ranks(totals), extent, moments  # each cell's total comes from the one rank that read it


# -- what the in-memory steps compute, from the moments --------------------------------------------
def _seurat_dispersions(mean: np.ndarray, var: np.ndarray) -> pd.DataFrame:
    """scanpy's flavor="seurat" dispersions from the moments of the normalised (non-log) values.

    Written out because scanpy computes them only from a matrix in memory; the steps follow
    scanpy.pp.highly_variable_genes (log dispersion, 20 bins of log mean, z-score within a bin,
    a bin of one gene scored 1), and tests/test_streaming.py checks the genes agree.
    """
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    bins = pd.cut(frame["means"], bins=_N_BINS)
    stats = frame.groupby(bins, observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0.0
    per_gene = stats.loc[bins].set_index(frame.index)
    frame["dispersions_norm"] = (frame["dispersions"] - per_gene["avg"]) / per_gene["dev"]
    return frame


def _seurat_table(mean: np.ndarray, var: np.ndarray, n_top: int) -> pd.DataFrame:
    """flavor="seurat": the dispersions and the top ``n_top`` flag."""
    hvg = _seurat_dispersions(mean, var)
    hvg[KEYS.HIGHLY_VARIABLE] = _top_dispersions(hvg["dispersions_norm"].to_numpy(), n_top)
    return hvg


class _Clipped:
    """flavor="seurat_v3" from a file: per kept feature, the sums of its counts and their squares
    clipped where the loess fit of pass 1's moments says (`sivae.data.hvg`)."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, n_cells: int, reg_std: np.ndarray, clip: np.ndarray) -> None:
        self.mean, self.var, self.n_cells, self.reg_std, self.clip = mean, var, n_cells, reg_std, clip
        self.sums = _Moments(len(mean))

    @classmethod
    def fit(cls, mean: np.ndarray, var: np.ndarray, n_cells: int, keep: np.ndarray) -> _Clipped | None:
        """The fit on the kept features; None (with a warning) where the loess cannot fit them."""
        mean, var = mean[keep], var[keep]
        if too_few_for_loess(len(mean)):
            return None
        try:
            return cls(mean, var, n_cells, *seurat_v3_clip(mean, var, n_cells))
        except ValueError as err:  # skmisc's loess: singular fits
            fallback(str(err))
            return None

    def add(self, block: sp.csr_matrix) -> None:
        clipped = block.copy()
        clipped.data = np.minimum(clipped.data.astype(np.float64), self.clip[clipped.indices])
        self.sums.add(clipped)

    def combine_ranks(self) -> None:
        self.sums.combine_ranks()

    def table(self, n_top: int) -> pd.DataFrame:
        return seurat_v3_table(self.mean, self.var, self.reg_std, self.n_cells, self.sums.total,
                               self.sums.total_sq, n_top)


def _top_dispersions(dispersion_norm: np.ndarray, n_top: int) -> np.ndarray:
    """scanpy's n_top_genes cut: every gene at or above the n-th highest normalised dispersion."""
    finite = np.sort(dispersion_norm[~np.isnan(dispersion_norm)])[::-1]
    cut = finite[min(n_top, finite.size) - 1]
    return np.nan_to_num(dispersion_norm, nan=-np.inf) >= cut


def _top_across_batches(per_batch: list[_Moments], n_top: int) -> np.ndarray:
    """scanpy's highly variable genes with ``batch_key`` (flavor "seurat") from each batch's moments.

    In each batch, the genes it expresses are ranked by normalised dispersion and its top
    ``n_top`` chosen; genes are then ranked by the number of batches that chose them, ties
    broken by the mean normalised dispersion over the batches expressing them, and the first
    ``n_top`` kept. Written out for the same reason as `_seurat_dispersions`.
    """
    n_features = per_batch[0].n_features
    chosen = np.zeros(n_features)
    dispersion = np.full((len(per_batch), n_features), np.nan)
    for b, moments in enumerate(per_batch):
        mean, var = moments.mean_var()
        expressed = moments.total > 0
        if moments.n_cells == 0 or not expressed.any():
            continue
        norm = _seurat_dispersions(mean[expressed], var[expressed])["dispersions_norm"].to_numpy()
        dispersion[b, expressed] = norm
        chosen[expressed] += _top_dispersions(norm, n_top)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a gene no batch expresses: NaN, ranked last
        mean_norm = np.nanmean(dispersion, axis=0)
    order = np.lexsort((-np.nan_to_num(mean_norm, nan=-np.inf), -chosen))
    keep = np.zeros(n_features, dtype=bool)
    keep[order[:n_top]] = True
    return keep


def _record_scaling(adata: AnnData, mean: np.ndarray, var: np.ndarray) -> None:
    std = np.sqrt(var)
    std[std == 0] = 1.0
    adata.var[KEYS.FEATURE_MEAN] = mean
    adata.var[KEYS.FEATURE_STD] = std


def _file_columns(adata: AnnData, matrix: BackedCellMatrix) -> np.ndarray:
    """Positions in the file of adata's features."""
    stored = matrix.var_names()
    position = pd.Index(stored).get_indexer(adata.var_names)
    if np.any(position < 0):
        missing = adata.var_names[position < 0]
        raise InputError(f"{len(missing)} features of adata (e.g. {missing[0]!r}) are not in "
                         f"{str(matrix.path)!r}; open the file again with sivae.read_backed")
    return position
