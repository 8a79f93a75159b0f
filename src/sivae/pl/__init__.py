"""Plots, scanpy style: ``sivae.pl.verb(adata, ...)`` draws what a model or a tool wrote and
returns a matplotlib Figure; given ``path`` it also saves it, atomically.

Embeddings and centrality (embeddings.py); ``save`` writes any figure atomically.
"""

from __future__ import annotations

from .embeddings import cell_embedding, centrality, feature_embedding, save

__all__ = ["cell_embedding", "centrality", "feature_embedding", "save"]
