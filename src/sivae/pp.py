"""Preprocessing, scanpy-style: ``sivae.pp.preprocess(adata, n_top_genes=2000)``; new cells are
treated as a model's training cells were with ``sivae.pp.apply(new, model)``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from .data.preprocess import preprocess, scale_features

__all__ = ["apply", "preprocess", "scale_features"]


def apply(adata: AnnData, model: Any) -> AnnData:
    """New cells transformed as ``model``'s training cells were, as a new AnnData.

    The training preprocessing is replayed from the record the model keeps (and saves in
    ``preprocess.json``): each cell's library size over the same genes, TP10K, log1p, the model's
    features in its order, the stored per-feature z-score and clipping. Extra genes are ignored.

    Parameters
    ----------
    adata
        New cells with raw counts in ``adata.X`` (for a model trained after
        ``sivae.pp.preprocess``), measured on the model's genes in any order.
    model
        A trained or loaded SIVAE, VAE or LDVAE.

    Returns
    -------
    AnnData
        A new AnnData on the model's features: ``X`` as the model reads it, the counts in
        ``layers["counts"]``, ``obs`` copied. A new object, because the features change.
    """
    if not hasattr(model, "preprocess"):
        raise ValueError(f"expected a sivae model, got {type(model).__name__}")
    return model.preprocess(adata)
