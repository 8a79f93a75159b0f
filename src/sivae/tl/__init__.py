"""Tools, scanpy style: ``sivae.tl.verb(adata, ...)`` reads a trained model's output, writes its
result under ``sivae`` keys where it has one, and returns it.

Centrality and hubs (centrality.py) and the scores of embeddings and loadings (metrics.py).
"""

from __future__ import annotations

from .centrality import hubs
from .metrics import hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette

__all__ = ["hubs", "hubs_in_top", "isolated_norm_ratio", "knn_accuracy", "loading_silhouette"]
