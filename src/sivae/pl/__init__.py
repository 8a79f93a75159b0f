"""Plots, scanpy style: ``sivae.pl.verb(adata, ...)`` draws what a model or a tool wrote and
returns a matplotlib Figure; given ``path`` it also saves it, atomically.

Embeddings and centrality (embeddings.py); ``save`` writes any figure atomically. Names are
drawn as written, never as mathtext (``_plain.py``): a gene called ``$x$`` shows its dollar signs.
"""

from __future__ import annotations

from ._common import save
from .embeddings import cell_embedding, centrality, feature_embedding

__all__ = ["cell_embedding", "centrality", "feature_embedding", "save"]

# interpretation (issue 16): agreement heatmaps (Fig. 3a), loadings as images (Fig. 3c)
from .interpretation import agreement, loadings_image

__all__ += ["agreement", "loadings_image"]

# gene networks (issue 15): centrality vs ground truth (Fig. 5a-b), neighbourhoods (Fig. 5c-e)
from .networks import centrality_truth, cumulative_truth, neighborhood_pve, overlap

__all__ += ["centrality_truth", "cumulative_truth", "neighborhood_pve", "overlap"]

# gene modules and gene-set enrichment (issue 28)
from .modules import enrichment, gene_modules

__all__ += ["enrichment", "gene_modules"]

# conditions (issue 28): centrality per group and the differential hubs
from .differential import differential_hubs

__all__ += ["differential_hubs"]
