"""From raw counts to the matrix siVAE trains on: TP10K, log1p, highly variable genes, z-score.

Built on scanpy's own steps; what sivae adds is the checks before them, the raw counts kept in a
layer, and the per-feature mean and standard deviation recorded so that new data can be scaled
the same way.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._constants import KEYS
from .. import _params
from .._errors import InputError
from .backed import is_backed
from .hvg import DEFAULT_FLAVOR, check_flavor, select_in_memory
from .record import PreprocessRecord, kept_features, scaled_record, subset_features
from .streaming import preprocess_backed, scale_backed
from .validate import (
    check_anndata_matrices,
    check_counts,
    check_finite,
    check_not_empty,
    check_unique_names,
    constant_features,
)

__all__ = ["preprocess", "scale_features"]

_COUNTS_HINT = (  # one sentence for Python and command-line users alike
    "sivae.pp.preprocess expects raw counts, so for data that are already normalised "
    "use sivae.pp.scale_features instead (on the command line: sivae fit --no-preprocess)"
)


def preprocess(
    adata: AnnData,
    *,
    n_top_genes: int | None = 2000,
    flavor: str = DEFAULT_FLAVOR,
    target_sum: float = 1e4,
    scale: bool = True,
    max_value: float | None = 10.0,
    drop_constant: bool = True,
    batch_key: str | None = None,
    copy: bool = False,
    progress: bool = True,
) -> AnnData | None:
    """Preprocess raw counts for siVAE: normalise, log-transform, select genes, z-score.

    Steps, in order:

    1. check ``adata.X``: not empty, unique cell and feature names, finite, non-negative
       integer counts (normalised data are refused: use `scale_features` for those);
    2. drop features that are constant across cells (all-zero included), with a warning;
    3. keep a copy of the counts in ``adata.layers[KEYS.COUNTS]``;
    4. scale each cell to ``target_sum`` total counts (`scanpy.pp.normalize_total`) and take
       ``log1p`` (`scanpy.pp.log1p`);
    5. select ``n_top_genes`` highly variable genes (`scanpy.pp.highly_variable_genes`,
       ``flavor`` "seurat_v3" on the counts, or "seurat" on the log data) and keep only those;
       skipped when ``n_top_genes`` is None or not below the number of features; with
       ``batch_key``, chosen in each batch and ranked by the number of batches that chose them
       (scanpy's ``batch_key``);
    6. z-score each feature (`scale_features`), if ``scale``.

    An AnnData from `sivae.read_backed` (matrix on disk) gets the same steps computed in two
    passes over the file: the features are selected and the statistics recorded (library sizes
    in ``adata.obs[KEYS.LIBRARY_SIZE]``), while the values are normalised, log-transformed and
    z-scored per training batch. Only ``scale=True`` is possible there, and no counts layer is
    written (the counts stay in the file).

    Parameters
    ----------
    adata
        Cells x features raw counts in ``adata.X`` (dense or sparse, in memory), or an AnnData
        from `sivae.read_backed`.
    n_top_genes
        Number of highly variable genes to keep, or None to keep all features.
    flavor
        How they are chosen: "seurat_v3" (default; scanpy's variance of the counts standardised
        by a loess fit of variance on mean, which needs the scikit-misc package) or "seurat"
        (dispersion of the log-normalised values within bins of mean; the default until
        issue 28). On Kang et al.'s control and interferon-stimulated PBMCs "seurat_v3" keeps 24 of
        52 canonical interferon-stimulated genes among 2,000 and "seurat" 6; on pbmc3k both
        give the same cell-type k-NN accuracy of PCA (benchmarks/programs.py).
    target_sum
        Total counts per cell after normalisation (1e4: TP10K).
    scale
        Z-score each feature after log-normalising.
    max_value
        Clip z-scores to [-max_value, max_value]; None for no clipping.
    drop_constant
        Drop constant features with a warning; if False, refuse data that have any.
    batch_key
        Column of ``adata.obs`` naming each cell's batch: highly variable genes are chosen
        across batches, so a gene that differs between batches alone is not preferred. Give
        the model the same column (``SIVAE(adata, batch_key=...)``).
    copy
        Work on and return a copy instead of changing ``adata`` in place.
    progress
        Show a progress bar for the passes over a backed file.

    Returns
    -------
    AnnData or None
        The preprocessed copy if ``copy``, else None. Writes ``adata.X`` (log-normalised, and
        z-scored if ``scale``), ``adata.layers[KEYS.COUNTS]`` (raw counts of the kept
        features), ``adata.var[KEYS.HIGHLY_VARIABLE]`` and scanpy's dispersion columns (when
        genes were selected), ``adata.var[KEYS.FEATURE_MEAN]`` and
        ``adata.var[KEYS.FEATURE_STD]`` (if ``scale``), ``adata.uns["log1p"]`` (scanpy's), and
        ``adata.uns[KEYS.PREPROCESS]``, a dict of the parameters used.

    Raises
    ------
    InputError
        If an argument is out of range, ``adata`` is backed, or ``adata.X`` fails a check.
    """
    _check_preprocess_args(n_top_genes, target_sum, max_value)
    flavor = check_flavor(flavor)
    _check_not_anndata_backed(adata, "preprocess")
    batches = check_batches(adata, batch_key)
    if copy:
        adata = adata.copy()
    if is_backed(adata):
        record = preprocess_backed(adata, n_top_genes=n_top_genes, flavor=flavor, target_sum=target_sum,
                                   scale=scale, max_value=max_value, drop_constant=drop_constant,
                                   progress=progress, batches=batches)
        adata.uns[KEYS.PREPROCESS] = record.as_uns()
        return adata if copy else None
    check_not_empty(adata)
    check_unique_names(adata)
    check_anndata_matrices(adata)  # before subset_features, which touches every matrix
    check_finite(adata.X, "adata.X")
    check_counts(adata.X, "adata.X", hint=_COUNTS_HINT)
    n_features_in = adata.n_vars
    keep = kept_features(constant_features(adata.X), drop=drop_constant, where="adata.X")
    n_constant = int((~keep).sum())
    library_features = tuple(map(str, adata.var_names[keep]))  # normalize_total sums over these
    if n_constant:
        subset_features(adata, keep)
    if not np.issubdtype(adata.X.dtype, np.floating):
        adata.X = adata.X.astype(np.float32)
    adata.layers[KEYS.COUNTS] = adata.X.copy()
    _warn_empty_cells(adata.X)

    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    used = _select_highly_variable(adata, n_top_genes, flavor, batch_key)
    if scale:
        _scale_in_place(adata, max_value)
    adata.uns[KEYS.PREPROCESS] = PreprocessRecord(
        raw_counts=True, scaled=bool(scale), n_features_in=int(n_features_in),
        n_constant_dropped=int(n_constant), target_sum=float(target_sum), log1p=True,
        n_top_genes=None if n_top_genes is None else int(n_top_genes),
        highly_variable_flavor=used,
        max_value=None if max_value is None or not scale else float(max_value),
        std_ddof=1 if scale else None, counts_layer=KEYS.COUNTS, n_features_out=int(adata.n_vars),
        library_features=library_features, batch_key=batch_key if used else None,
    ).as_uns()
    return adata if copy else None


def scale_features(
    adata: AnnData, *, max_value: float | None = 10.0, copy: bool = False, progress: bool = True
) -> AnnData | None:
    """Z-score each feature of ``adata.X``: subtract its mean, divide by its standard deviation.

    The z-score step of `preprocess` alone, for data that are already normalised and
    log-transformed (e.g. scanpy's ``pbmc68k_reduced().raw``). The standard deviation uses
    ``ddof=1``, as `scanpy.pp.scale` does; a constant feature's is taken as 1, so it becomes 0.
    The result is dense: centring removes sparsity.

    On an AnnData from `sivae.read_backed` the means and standard deviations come from one pass
    over the file, features constant across cells are dropped with a warning, and the values
    are z-scored per training batch.

    Parameters
    ----------
    adata
        Cells x features in ``adata.X`` (dense or sparse, in memory), at least 2 cells, or an
        AnnData from `sivae.read_backed`.
    max_value
        Clip z-scores to [-max_value, max_value]; None for no clipping.
    copy
        Work on and return a copy instead of changing ``adata`` in place.
    progress
        Show a progress bar for the pass over a backed file.

    Returns
    -------
    AnnData or None
        The scaled copy if ``copy``, else None. Writes ``adata.X`` (float32, dense),
        ``adata.var[KEYS.FEATURE_MEAN]`` and ``adata.var[KEYS.FEATURE_STD]`` (the values used),
        and the keys ``"scaled"``, ``"max_value"`` and ``"std_ddof"`` of
        ``adata.uns[KEYS.PREPROCESS]``.

    Raises
    ------
    InputError
        If ``max_value`` is not positive, ``adata`` is backed, empty or has a single cell, or
        ``adata.X`` holds NaN or infinite values.
    """
    _check_max_value(max_value)
    _check_not_anndata_backed(adata, "scale_features")
    if copy:
        adata = adata.copy()
    if is_backed(adata):
        if adata.uns.get(KEYS.PREPROCESS, {}).get("raw_counts"):
            raise InputError("adata was preprocessed with sivae.pp.preprocess, which already "
                             "z-scores it; do not scale it again")
        scale_backed(adata, max_value=max_value, progress=progress)
        return adata if copy else None
    check_not_empty(adata)
    check_finite(adata.X, "adata.X")
    _scale_in_place(adata, max_value)
    adata.uns[KEYS.PREPROCESS] = scaled_record(adata.uns.get(KEYS.PREPROCESS), max_value, backed=False)
    return adata if copy else None


def _check_not_anndata_backed(adata: AnnData, what: str) -> None:
    if isinstance(adata, AnnData) and adata.isbacked:
        raise InputError(
            f"{what} needs the matrix in memory or opened with sivae.read_backed, but adata was "
            "opened with anndata's backed mode; use adata = adata.to_memory(), or "
            "sivae.read_backed(path) to work out of core"
        )


def _scale_in_place(adata: AnnData, max_value: float | None) -> None:
    if adata.n_obs < 2:
        raise InputError(
            f"adata has {adata.n_obs} cell, too few to estimate a standard deviation; "
            "z-scoring needs at least 2 cells"
        )
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    X = X.astype(np.float32, copy=not sp.issparse(adata.X))
    mean = X.mean(axis=0, dtype=np.float64)  # (n_features,)
    std = X.std(axis=0, ddof=1, dtype=np.float64)
    std[std == 0] = 1.0
    X -= mean.astype(np.float32)
    X /= std.astype(np.float32)
    if max_value is not None:
        np.clip(X, -max_value, max_value, out=X)
    adata.X = X
    adata.var[KEYS.FEATURE_MEAN] = mean
    adata.var[KEYS.FEATURE_STD] = std


def _warn_empty_cells(X: Any) -> None:
    totals = np.asarray(X.sum(axis=1)).ravel()
    n_empty = int(np.count_nonzero(totals == 0))
    if n_empty:
        warnings.warn(
            f"{n_empty} cells have no counts in the kept features; they stay all-zero after "
            "normalisation (remove them with scanpy.pp.filter_cells(adata, min_counts=1))",
            UserWarning,
            stacklevel=3,
        )


def _select_highly_variable(adata: AnnData, n_top_genes: int | None, flavor: str,
                            batch_key: str | None) -> str | None:
    # the flavour used, or None when every feature is kept
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        return None
    if batch_key is None:
        return select_in_memory(adata, n_top_genes, flavor)
    # scanpy would turn the user's column into a categorical: it works on a copy of obs instead
    obs = adata.obs
    adata.obs = obs.assign(**{batch_key: obs[batch_key].astype(str).astype("category")})
    try:
        return select_in_memory(adata, n_top_genes, flavor, batch_key=batch_key)
    finally:
        adata.obs = obs


def check_batches(adata: AnnData, batch_key: str | None) -> np.ndarray | None:
    """Each cell's batch as codes 0..n-1 (None without ``batch_key``); refuses a missing column or NaN."""
    if batch_key is None:
        return None
    if not isinstance(batch_key, str) or batch_key not in adata.obs.columns:
        raise InputError(f"batch_key {batch_key!r} is not a column of adata.obs; name the column that holds "
                         "each cell's batch")
    column = adata.obs[batch_key]
    if column.isna().any():
        raise InputError(f"adata.obs[{batch_key!r}] is missing (NaN) for {int(column.isna().sum())} cells; "
                         "fill it in or drop those cells")
    return np.unique(np.asarray(column.astype(str)), return_inverse=True)[1]


def _check_preprocess_args(
    n_top_genes: int | None, target_sum: float, max_value: float | None
) -> None:
    _params.optional_count(n_top_genes, "n_top_genes")
    # infinite (or huge) totals overflow: scanpy then leaves the counts unnormalised
    _params.number(target_sum, "target_sum", low=0.0, high=1e12, low_open=True)
    _check_max_value(max_value)


def _check_max_value(max_value: float | None) -> None:
    if max_value is not None and not (
        isinstance(max_value, (int, float, np.number)) and max_value > 0
    ):
        raise InputError(f"max_value must be a positive number or None, got {max_value!r}")
