"""Checks that the cells a tool hands to a trained model are in the space the model reads."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from sivae._errors import InputError

_SAMPLE_CELLS = 1000  # cells read to judge the scale; enough for every feature's mean
_MIN_VALUES = 50  # z-scored data with this many values hold a negative one with near certainty
_MAX_MEAN_SHIFT = 3.0  # a feature's mean this many training standard deviations away is another scale


def check_model_input(model: Any, adata: AnnData, what: str) -> None:
    """Refuse cells that are not transformed as ``model``'s training cells were.

    A model trained after ``sivae.pp.preprocess`` reads z-scored values; given raw counts or
    log-normalised values instead, every attribution or score is computed on the wrong scale
    and nothing else would say so. z-scored data always hold negative values and features
    centred near 0; raw and log-normalised values are never negative. Models without a
    preprocessing record are not checked (their input scale is unknown). The model's own AnnData
    is checked too: ``load_model(folder, adata)`` accepts any cells on the model's features.
    """
    if getattr(model, "preprocessing", None) is None:
        return
    n = adata.n_obs
    rows = np.unique(np.linspace(0, n - 1, min(n, _SAMPLE_CELLS)).astype(np.int64)) if n else np.zeros(0, int)
    if not len(rows):
        return
    x = model.cell_source(adata).rows(rows).double()  # (b, F) as the model would read it
    negative = bool((x < 0).any())
    mean_shift = float(x.mean(0).abs().median()) if len(rows) >= 20 else 0.0
    if (x.numel() >= _MIN_VALUES and not negative) or mean_shift > _MAX_MEAN_SHIFT:
        seen = ("holds no negative value" if not negative
                else f"has feature means a median {mean_shift:.3g} from 0")
        raise InputError(
            f"{what}: adata.X {seen}, so it is not the z-scored input this model was trained on (raw or "
            "log-normalised values?); pass the h5ad that `sivae fit` wrote, or transform raw counts first "
            "with model.preprocess(adata)"
        )
