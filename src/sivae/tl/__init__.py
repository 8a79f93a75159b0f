"""Tools, scanpy style: ``sivae.tl.verb(adata, ...)`` reads a trained model's output, writes its
result into the AnnData and returns it.

Keys: one rule for every tool here, as scanpy's. A tool that writes a result takes
``key_added: str | None = None``; None writes under the tool's default ``sivae_...`` key (its
docstring names it), a string under that key instead. The result is always written, and also
returned; only where writing is optional does a tool take ``inplace`` (default True; False:
return the result and write nothing). A tool that only reads a result takes ``key`` instead
(``hubs``, ``neighbors``). Tools that need a fitted model use its public methods only
(``model.reconstructions``, ``model.decoded_features``, ``model.cell_source``, ...; see
``sivae.models.scoring``).

Centrality and hubs (centrality.py) and the scores of embeddings and loadings (metrics.py). The
cross-validation protocol of the embedding benchmarks is ``sivae.evaluation``.
"""

from __future__ import annotations

from .centrality import hubs
from .metrics import hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette

# gene networks (issue 15): degree centrality and its bootstrap, GRN methods, edge recovery,
# ground-truth centrality, neighbourhoods
from .centrality import centrality_ci, degree_centrality
from .edges import edge_list, edge_recovery
from .grn import aracne, clr, grn, mrnet, mutual_information
from .ground_truth import centrality_ground_truth
from .neighborhoods import compare_neighborhoods, neighbors

# hubs (issue 26): baselines that cost seconds, a ground truth without networks, its reliability
from .baselines import correlation_degree, correlation_network, detection_rate, mean_expression, pca_centrality
from .ground_truth import centrality_ground_truth_binned
from .reliability import noise_ceiling, partial_spearman, split_half_reliability

# interpretation (issue 16): attributions, their summary, Gene Relevance, agreement
from .agreement import agreement, agreement_matrix
from .attribution import attribute
from .attribution_summary import summarize_attributions
from .gene_relevance import gene_relevance

# gene modules and offline gene-set enrichment (issue 28)
from .enrichment import enrich, over_representation, rank_enrichment
from .gene_sets import match_gene_sets, read_gene_sets
from .modules import gene_modules, module_scores, origin_threshold

# conditions (issue 28): hubs that change between two groups of cells
from .differential import differential_hubs

__all__ = ["hubs", "hubs_in_top", "isolated_norm_ratio", "knn_accuracy", "loading_silhouette"]
__all__ += ["aracne", "centrality_ci", "centrality_ground_truth", "clr", "compare_neighborhoods",
            "degree_centrality", "edge_list", "edge_recovery", "grn", "mrnet", "mutual_information", "neighbors"]
__all__ += ["centrality_ground_truth_binned", "correlation_degree", "correlation_network", "detection_rate",
            "mean_expression", "noise_ceiling", "partial_spearman", "pca_centrality", "split_half_reliability"]
__all__ += ["differential_hubs"]
__all__ += ["agreement", "agreement_matrix", "attribute", "gene_relevance", "summarize_attributions"]
__all__ += ["enrich", "gene_modules", "match_gene_sets", "module_scores", "origin_threshold", "over_representation",
            "rank_enrichment", "read_gene_sets"]
