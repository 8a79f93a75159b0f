"""Tools, scanpy style: ``sivae.tl.verb(adata, ...)`` reads a trained model's output, writes its
result under ``sivae`` keys where it has one, and returns it.

Centrality and hubs (centrality.py) and the scores of embeddings and loadings (metrics.py).
"""

from __future__ import annotations

from .centrality import hubs
from .metrics import hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette

# gene networks (issue 15): degree centrality and its bootstrap, GRN methods, edge recovery,
# ground-truth centrality, neighbourhoods
from .centrality import centrality_ci, degree_centrality
from .edges import edge_recovery
from .grn import aracne, clr, grn, mrnet, mutual_information
from .ground_truth import centrality_ground_truth
from .neighborhoods import compare_neighborhoods, neighbors

# evaluation (issue 17): cross-validated k-NN accuracy of held-out cells
from .evaluation import (
    cross_validate,
    default_k,
    heldout_knn_accuracy,
    model_embedder,
    pca_embedder,
    split_fold,
    stratified_folds,
)

# interpretation (issue 16): attributions, their summary, Gene Relevance, agreement
from .agreement import agreement, agreement_matrix
from .attribution import attribute
from .attribution_summary import summarize_attributions
from .gene_relevance import gene_relevance

__all__ = ["hubs", "hubs_in_top", "isolated_norm_ratio", "knn_accuracy", "loading_silhouette"]
__all__ += ["aracne", "centrality_ci", "centrality_ground_truth", "clr", "compare_neighborhoods",
            "degree_centrality", "edge_recovery", "grn", "mrnet", "mutual_information", "neighbors"]
__all__ += ["cross_validate", "default_k", "heldout_knn_accuracy", "model_embedder", "pca_embedder",
            "split_fold", "stratified_folds"]
__all__ += ["agreement", "agreement_matrix", "attribute", "gene_relevance", "summarize_attributions"]
