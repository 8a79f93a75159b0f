"""Cells drawn from a trained model's generative process (siVAE-GRN runs a network method on them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .. import _params
from .._constants import KEYS
from .._errors import InputError


@torch.no_grad()
def draw_cells(model: Any, n_cells: int, *, seed: int = 0, library: np.ndarray | None = None, batch: Any = None,
               covariates: dict[str, Any] | None = None) -> AnnData:
    """``model.sample``: z ~ N(0, I), x ~ p(x | z, a) for ``n_cells`` cells of ``model``."""
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
    covs, obs = _covariates(model, n_cells, rng, _given(model, batch, covariates))
    devices = [model.device] if model.device.type == "cuda" else []
    model.module.eval()
    with torch.random.fork_rng(devices=devices):  # seeded without touching the global stream
        torch.manual_seed(seed)
        X = model.module.generate(int(n_cells), model.decoded_features(), lib, **covs).float().cpu().numpy()
    out = AnnData(X=X, obs=pd.DataFrame(obs, index=[f"sample_{i}" for i in range(n_cells)]))
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


def _given(model: Any, batch: Any, covariates: Any) -> dict[str, Any]:
    # the covariate values sample() was given, by obs column; batch= is short for the batch_key's
    if covariates is not None and not isinstance(covariates, dict):
        raise InputError(f"covariates must be a dict of obs column -> value; got {type(covariates).__name__}")
    given = dict(covariates or {})
    coding = model.covariate_coding
    if batch is not None:
        if model.config.batch_key is None:
            raise InputError("batch= needs a model trained with a batch_key; this one has none, so drop batch=")
        if model.config.batch_key in given:
            raise InputError(f"the batch is given twice, as batch= and in covariates[{model.config.batch_key!r}]; "
                             "give it once")
        given[model.config.batch_key] = batch
    known = () if coding is None else coding.keys
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InputError(f"covariates names {unknown}, which are not covariates of this model "
                         f"({', '.join(known) or 'it has none'}); give values for its own covariates")
    return given


def _covariates(model: Any, n_cells: int, rng: np.random.Generator, given: dict[str, Any]
                ) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
    # (the module's cat_covs and cont_covs, the obs columns of the drawn cells): values given, or
    # those of training cells drawn at random
    coding = model.covariate_coding
    if coding is None:
        return {"cat_covs": None, "cont_covs": None}, {}
    rows = None
    if set(coding.keys) - set(given):
        model.require_data(f"sample() without values for every covariate ({', '.join(coding.keys)})")
        rows = rng.choice(model.train_idx, size=n_cells, replace=True)
    cat = np.zeros((n_cells, len(coding.categorical)), dtype=np.int64)
    cont = np.zeros((n_cells, len(coding.continuous)), dtype=np.float32)
    obs: dict[str, Any] = {}
    for j, (key, cats) in enumerate(coding.categorical):
        if key in given:
            if str(given[key]) not in cats:
                raise InputError(f"{given[key]!r} is no category of {key!r} the model was trained on, and mapping "
                                 f"new batches is not supported yet; choose one of {', '.join(cats[:5])}")
            cat[:, j] = cats.index(str(given[key]))
        else:
            cat[:, j] = model.covariates.cat[rows, j]
        obs[key] = pd.Categorical.from_codes(cat[:, j], categories=list(cats))
    for m, (key, mean, sd) in enumerate(coding.continuous):
        if key in given:
            value = given[key]
            if not _params.is_int(value) and not isinstance(value, (float, np.floating)) or not np.isfinite(value):
                raise InputError(f"covariates[{key!r}] must be a finite number (in the column's units); got {value!r}")
            cont[:, m] = (float(value) - mean) / sd
        else:
            cont[:, m] = model.covariates.cont[rows, m]
        obs[key] = cont[:, m].astype(np.float64) * sd + mean
    device = model.device
    return {"cat_covs": torch.from_numpy(cat).to(device) if coding.categorical else None,
            "cont_covs": torch.from_numpy(cont).to(device) if coding.continuous else None}, obs
