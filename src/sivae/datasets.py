"""Datasets that work offline: ``sivae.datasets.pbmc3k()``, ``simulated_network()``, ..."""

from __future__ import annotations

from .data.datasets import pbmc3k, pbmc68k_reduced, simulated_network

__all__ = ["pbmc3k", "pbmc68k_reduced", "simulated_network"]
