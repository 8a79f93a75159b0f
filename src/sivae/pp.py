"""Preprocessing, scanpy-style: ``sivae.pp.preprocess(adata, n_top_genes=2000)``."""

from __future__ import annotations

from .data.preprocess import preprocess, scale_features

__all__ = ["preprocess", "scale_features"]
