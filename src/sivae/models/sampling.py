"""Cells drawn from a trained model's generative process (siVAE-GRN runs a network method on them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from .. import _params
from .._constants import KEYS
from .._errors import InputError


@torch.no_grad()
def draw_cells(model: Any, n_cells: int, *, seed: int = 0, library: np.ndarray | None = None) -> AnnData:
    """``model.sample``: z ~ N(0, I), x ~ p(x | z) for ``n_cells`` cells of ``model``."""
    n_cells, seed = _params.count(n_cells, "n_cells"), _params.seed(seed)
    if not model.is_trained:
        raise InputError("sample() needs a trained model; call train() first")
    nb = model.config.likelihood == "nb"
    if library is not None and not nb:
        raise InputError("library applies to 'nb' models only; this model draws scaled values")
    # the result (twice for "nb": X and the counts layer) and the decoder's activations, float32
    widths = sum(model.config.decoder_sizes) + len(model.feature_names) * (3 if nb else 2)
    _params.check_memory(4.0 * n_cells * widths, f"drawing {n_cells:,} cells of {len(model.feature_names):,} "
                         "features", "draw fewer cells at a time")
    rng = np.random.default_rng(seed)
    lib = None
    if nb:
        if library is None:
            model.require_data("sample() without library sizes")
            totals = np.asarray(model.adata.layers[KEYS.COUNTS][model.train_idx].sum(1)).ravel()
            library = rng.choice(totals, size=n_cells, replace=True)
        lib = torch.as_tensor(_library(library, n_cells), device=model.device)
    devices = [model.device] if model.device.type == "cuda" else []
    model.module.eval()
    with torch.random.fork_rng(devices=devices):  # seeded without touching the global stream
        torch.manual_seed(seed)
        X = model.module.generate(int(n_cells), model.decoded_features(), lib).float().cpu().numpy()
    out = AnnData(X=X)
    out.obs_names = [f"sample_{i}" for i in range(n_cells)]
    out.var_names = model.feature_names.copy()
    if lib is not None:
        out.layers[KEYS.COUNTS] = X.copy()
    return out


def _library(library: object, n_cells: int) -> np.ndarray:
    # total counts per drawn cell: n_cells positive numbers, finite in float32
    try:
        lib = np.asarray(library, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"library must be {n_cells} total counts (numbers); got {type(library).__name__}") from None
    if lib.shape != (n_cells,):
        raise InputError(f"library must hold one total count per drawn cell, shape ({n_cells},); got shape {lib.shape}")
    bad = ~(np.isfinite(lib) & (lib > 0) & (lib <= np.finfo(np.float32).max))
    if bad.any():
        raise InputError(f"library holds {int(bad.sum())} values that are not positive finite counts (first "
                         f"{lib[bad][0]!r}); a cell's total count must be > 0")
    return lib.astype(np.float32)
