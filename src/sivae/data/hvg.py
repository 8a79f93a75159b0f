"""Highly variable genes: which flavour, on which values, in memory or from a file's sums.

The default is scanpy's "seurat_v3" on the raw counts (a loess fit of each gene's variance on
its mean, then the variance of the counts standardised by that fit): on Kang et al.'s control
and interferon-stimulated PBMCs it keeps 24 of 52 canonical interferon-stimulated genes among
2,000, where "seurat" on the log-normalised values keeps 6, and it matches "seurat" on pbmc3k's
cell types (benchmarks/programs.py). "seurat" stays available (``flavor="seurat"``).
The streaming path (``sivae.data.streaming``) computes the same statistics from sums over chunks
of a file; the helpers here turn those sums into scanpy's numbers.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import KEYS
from .._errors import InputError

FLAVORS = ("seurat_v3", "seurat")
DEFAULT_FLAVOR = "seurat_v3"
_SPAN = 0.3  # loess span of seurat_v3, scanpy's default
# skmisc's loess at span 0.3 failed on 5-10 genes (near singularities) and crashed the process on
# 3 (segmentation fault), over 6 seeds each; from 20 genes it fitted every time. Below this many
# genes seurat_v3 is not tried: seurat is used, with a warning.
_MIN_GENES_V3 = 50


def check_flavor(flavor: object) -> str:
    """Refuse an unknown flavour, or seurat_v3 without scikit-misc (its loess), in one sentence."""
    if flavor not in FLAVORS:
        raise InputError(f"flavor must be one of {', '.join(map(repr, FLAVORS))}; got {flavor!r}")
    # scanpy imports skmisc only inside its step, after our checks and copies: say it now
    if flavor == "seurat_v3" and importlib.util.find_spec("skmisc") is None:
        raise InputError("flavor='seurat_v3' needs the scikit-misc package for its loess fit; "
                         "pip install scikit-misc, or pass flavor='seurat'")
    return str(flavor)


def select_in_memory(adata: AnnData, n_top_genes: int, flavor: str, *, batch_key: str | None = None) -> str:
    """Keep the ``n_top_genes`` most variable genes of an in-memory AnnData (scanpy's own step).

    "seurat_v3" reads the raw counts in ``adata.layers[KEYS.COUNTS]``, "seurat" the log-normalised
    ``adata.X``; the statistics go into ``adata.var`` as scanpy writes them. Returns the flavour
    used: "seurat" where seurat_v3's loess cannot fit (`fallback`). With ``batch_key`` (a
    categorical column of ``adata.obs``), scanpy chooses genes in each batch and ranks them
    across batches.
    """
    import scanpy as sc  # here: the CLI reads FLAVORS from this module without loading scanpy

    if flavor == "seurat_v3" and not too_few_for_loess(adata.n_vars):
        try:
            sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor=flavor, layer=KEYS.COUNTS,
                                        subset=True, span=_SPAN, batch_key=batch_key)
            return flavor
        except ValueError as err:  # skmisc's loess: singular fits
            fallback(str(err))
        flavor = "seurat"
    elif flavor == "seurat_v3":
        flavor = "seurat"
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor=flavor, subset=True, batch_key=batch_key)
    return flavor


def too_few_for_loess(n_genes: int) -> bool:
    """Whether seurat_v3 is skipped for ``n_genes`` varying genes (with the warning of `fallback`)."""
    if n_genes >= _MIN_GENES_V3:
        return False
    fallback(f"{n_genes} genes are too few for its loess fit (it needs {_MIN_GENES_V3})")
    return True


def fallback(reason: str) -> None:
    """Warn that seurat_v3 could not run and seurat chose the genes instead."""
    warnings.warn(f"flavor='seurat_v3' could not run ({reason}); the highly variable genes were chosen "
                  "with flavor='seurat' instead, as uns['sivae_preprocess'] records", UserWarning, stacklevel=4)


def seurat_v3_clip(mean: np.ndarray, var: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(expected standard deviation, clip value) per gene from the counts' mean and ddof=1 variance.

    scanpy's seurat_v3 step: log10 variance regressed on log10 mean by loess over the genes that
    vary, and counts clipped at mean + sqrt(n_cells) expected standard deviations.
    """
    from skmisc.loess import loess

    varying = var > 0
    fitted = np.zeros_like(mean)
    model = loess(np.log10(mean[varying]), np.log10(var[varying]), span=_SPAN, degree=2)
    model.fit()
    fitted[varying] = model.outputs.fitted_values
    reg_std = np.sqrt(10**fitted)
    return reg_std, reg_std * np.sqrt(n_cells) + mean


def seurat_v3_table(mean: np.ndarray, var: np.ndarray, reg_std: np.ndarray, n_cells: int, clipped_sum: np.ndarray,
                    clipped_sq: np.ndarray, n_top_genes: int) -> pd.DataFrame:
    """scanpy's seurat_v3 columns from the sums of the clipped counts: the variance of the counts
    standardised by the fit (``variances_norm``), its rank and the top ``n_top_genes`` flag."""
    n = float(n_cells)
    norm = (n * mean**2 + clipped_sq - 2 * clipped_sum * mean) / ((n - 1) * reg_std**2)
    rank = np.argsort(np.argsort(-norm, kind="stable"), kind="stable").astype(np.float32)
    chosen = rank < n_top_genes
    return pd.DataFrame({KEYS.HIGHLY_VARIABLE: chosen, "highly_variable_rank": np.where(chosen, rank, np.nan),
                         "means": mean, "variances": var, "variances_norm": norm})
