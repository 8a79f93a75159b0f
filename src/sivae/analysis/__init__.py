"""Analyses of a trained model's output: hubs and scores of embeddings and loadings."""

from __future__ import annotations

from sivae.analysis.centrality import hubs
from sivae.analysis.metrics import (
    hubs_in_top,
    isolated_norm_ratio,
    knn_accuracy,
    loading_silhouette,
)

__all__ = ["hubs", "hubs_in_top", "isolated_norm_ratio", "knn_accuracy", "loading_silhouette"]
