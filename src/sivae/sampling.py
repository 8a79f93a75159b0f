"""Cells drawn from a trained model's generative process (siVAE-GRN runs a network method on them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from ._constants import KEYS
from ._errors import InputError


@torch.no_grad()
def draw_cells(model: Any, n_cells: int, *, seed: int = 0, library: np.ndarray | None = None) -> AnnData:
    """``model.sample``: z ~ N(0, I), x ~ p(x | z) for ``n_cells`` cells of ``model``."""
    if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 1:
        raise InputError(f"n_cells must be an integer >= 1; got {n_cells!r}")
    if not model.is_trained:
        raise InputError("sample() needs a trained model; call train() first")
    rng = np.random.default_rng(seed)
    lib = None
    if model.config.likelihood == "nb":
        if library is None:
            model.require_data("sample() without library sizes")
            totals = np.asarray(model.adata.layers[KEYS.COUNTS][model.train_idx].sum(1)).ravel()
            library = rng.choice(totals, size=n_cells, replace=True)
        lib = torch.as_tensor(np.asarray(library, dtype=np.float32), device=model.device)
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
