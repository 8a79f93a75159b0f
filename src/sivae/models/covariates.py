"""A model's covariates between AnnData and tensors: the batch and the other columns of ``adata.obs``.

The module (nn/module.py, nn/covariates.py) reads each cell's covariates as category codes
``cat_covs`` (cells, J), long, in the order of ``ModuleConfig.n_cats_per_covariate`` (the batch
first), and values ``cont_covs`` (cells, M). This file turns ``adata.obs`` into those and back:

- :class:`CovariateCoding` is fixed when a model is built: each categorical column's categories
  and their order, each continuous column's mean and sd over the training cells. It is saved in
  config.json, so a loaded model codes new cells exactly as it coded its training cells.
- :class:`CellCovariates` holds every cell's codes and standardised values (from ``obs``, which
  anndata keeps in memory also when ``X`` is backed, and on every torchrun rank) and hands out
  the rows of a minibatch as tensors.
- :class:`CovariatesMixin` gives the models ``get_batch_effects`` and ``cell_covariates``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._errors import InputError

_NO_COVARIATES = {"cat_covs": None, "cont_covs": None}


@dataclass(frozen=True)
class CovariateCoding:
    """How a model codes its covariates, fixed at fit time.

    ``categorical``: (column, its categories in code order) per categorical covariate, the batch
    first. ``continuous``: (column, mean, sd) per continuous covariate; a value u enters the
    model as (u - mean) / sd.
    """

    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    continuous: tuple[tuple[str, float, float], ...] = ()

    @property
    def n_cats(self) -> tuple[int, ...]:
        """Categories per categorical covariate (ModuleConfig.n_cats_per_covariate)."""
        return tuple(len(cats) for _, cats in self.categorical)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.categorical) + tuple(k for k, _, _ in self.continuous)

    @classmethod
    def fit(cls, obs: pd.DataFrame, categorical_keys: tuple[str, ...], continuous_keys: tuple[str, ...],
            train_idx: np.ndarray) -> CovariateCoding | None:
        """Categories (of all cells) and means and sds (of the training cells ``train_idx``); None without covariates."""
        if not categorical_keys and not continuous_keys:
            return None
        categorical = []
        for key in categorical_keys:
            column = _column(obs, key)
            cats = _categories(column)
            if len(cats) < 2:
                raise InputError(f"adata.obs[{key!r}] has one category ({cats[0]!r}), so it cannot act as a "
                                 "covariate; drop it from the covariates, or give a column with two or more")
            categorical.append((key, cats))
        continuous = []
        for key in continuous_keys:
            values = _numbers(obs, key)[train_idx]
            mean, sd = float(values.mean()), float(values.std())
            if not sd > 0:
                raise InputError(f"adata.obs[{key!r}] is constant on the training cells ({mean:g}), so it "
                                 "cannot act as a covariate; drop it from continuous_covariate_keys")
            continuous.append((key, mean, sd))
        return cls(tuple(categorical), tuple(continuous))

    def encode(self, obs: pd.DataFrame) -> CellCovariates:
        """Every cell's codes and standardised values; refuses missing columns, NaN and unknown categories."""
        n = len(obs)
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (key, cats) in enumerate(self.categorical):
            column = _column(obs, key)
            codes = pd.Index(cats).get_indexer(_as_text(column))
            if (codes < 0).any():
                unknown = sorted(set(_as_text(column)[codes < 0]))
                raise InputError(
                    f"adata.obs[{key!r}] holds categories the model was not trained on ({', '.join(unknown[:3])}), "
                    f"and mapping new batches is not supported yet: give cells of the known categories "
                    f"({', '.join(cats[:5])}{', ...' if len(cats) > 5 else ''})")
            cat[:, j] = codes
        cont = np.zeros((n, len(self.continuous)), dtype=np.float32)
        for m, (key, mean, sd) in enumerate(self.continuous):
            cont[:, m] = (_numbers(obs, key) - mean) / sd
        return CellCovariates(cat, cont)

    def to_json(self) -> dict[str, Any]:
        return {"categorical": [{"key": k, "categories": list(c)} for k, c in self.categorical],
                "continuous": [{"key": k, "mean": m, "sd": s} for k, m, s in self.continuous]}

    @classmethod
    def from_json(cls, record: Any, where: str) -> CovariateCoding | None:
        """The coding saved in config.json (None: a model without covariates, or of sivae 0.1.0)."""
        if record is None:
            return None
        try:
            categorical = tuple((str(c["key"]), tuple(str(v) for v in c["categories"])) for c in record["categorical"])
            continuous = tuple((str(c["key"]), float(c["mean"]), float(c["sd"])) for c in record["continuous"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{where} holds an unreadable covariate record ({err}); re-save the model") from err
        return cls(categorical, continuous)


@dataclass
class CellCovariates:
    """Every cell's covariates as the module reads them: codes (C, J) int64 and values (C, M) float32."""

    cat: np.ndarray
    cont: np.ndarray

    def fingerprint(self, coding: CovariateCoding) -> bytes:
        """The coding and every cell's values as bytes, for a checkpoint's record of its data."""
        return json.dumps(coding.to_json()).encode() + self.cat.tobytes() + self.cont.tobytes()

    def rows(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor | None]:
        """``cat_covs`` and ``cont_covs`` of the cells ``idx``: keyword arguments of the module's methods."""
        idx = np.asarray(idx, dtype=np.int64)
        cat = torch.from_numpy(self.cat[idx]).to(device) if self.cat.shape[1] else None
        cont = torch.from_numpy(self.cont[idx]).to(device) if self.cont.shape[1] else None
        return {"cat_covs": cat, "cont_covs": cont}


def covariate_rows(covariates: CellCovariates | None, idx: np.ndarray,
                   device: torch.device | str = "cpu") -> dict[str, torch.Tensor | None]:
    """``covariates.rows(idx)``, or Nones for a model without covariates (``covariates`` None)."""
    return dict(_NO_COVARIATES) if covariates is None else covariates.rows(idx, device)


class CovariatesMixin:
    """The covariates of a model's cells and their effects (mixed into `BaseModel`).

    Uses the model's ``covariate_coding`` (None without covariates), ``covariates`` (its training
    data's CellCovariates), ``module``, ``adata``, ``keys`` and ``feature_names``.
    """

    covariate_coding: CovariateCoding | None
    covariates: CellCovariates | None

    def cell_covariates(self, adata: AnnData | None = None) -> CellCovariates | None:
        """The covariates of ``adata``'s cells as the model reads them; None for a model without covariates.

        Parameters
        ----------
        adata
            The model's own data (None or ``model.adata``), or new cells whose ``adata.obs`` holds
            the model's covariate columns, with categories the model was trained on.

        Raises
        ------
        InputError
            A column is missing, holds NaN, a category the model lacks, or is not numeric where
            a continuous covariate is expected.
        """
        if self.covariate_coding is None:
            return None
        if adata is None or adata is self.adata:
            self.require_data("reading the training cells' covariates")
            return self.covariates
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}")
        return self.covariate_coding.encode(adata.obs)

    def get_batch_effects(self) -> pd.DataFrame:
        """Each covariate's own effect on every feature, kept apart from the loadings: features x categories.

        Returns
        -------
        pandas.DataFrame
            One row per feature (``feature_names``), one column per category of each
            categorical covariate (the batch first) and one per continuous covariate; the columns
            are a MultiIndex (covariate, category), so ``effects[batch_key]`` is features x
            batches, and a continuous covariate's column is (its key, "per_sd"): the effect of
            one training-cell standard deviation. Values are the rows of B (nn.module): shifts of
            the mean in the scaled space (gaussian), or of the log-rate ("nb", centred over the
            features, as only differences between features are identified there); each
            categorical covariate's effects are centred over its categories. Without covariates,
            an empty frame.
        """
        effects = self.module.covariate_effects()
        coding = self.covariate_coding or CovariateCoding()
        blocks, columns = [], []
        for (key, cats), block in zip(coding.categorical, effects.categorical):
            blocks.append(block.T.cpu().numpy())
            columns += [(key, c) for c in cats]
        for (key, _, _), row in zip(coding.continuous, effects.continuous):
            blocks.append(row.cpu().numpy()[:, None])
            columns.append((key, "per_sd"))
        values = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(self.feature_names), 0), np.float32)
        index = pd.MultiIndex.from_tuples(columns, names=["covariate", "category"]) if columns else None
        return pd.DataFrame(values, index=pd.Index(self.feature_names), columns=index)

    def write_batch_effects(self) -> None:
        """`get_batch_effects` into the model's AnnData, where a file keeps it: nothing without covariates.

        Writes ``adata.varm["<key>_batch_effects"]`` (features x categories, float32) and its
        columns, "covariate:category", in ``adata.uns["<key>"]["batch_effects"]``.
        """
        if self.covariate_coding is None:
            return
        effects = self.get_batch_effects()
        self.adata.varm[self.keys.batch_effects] = effects.to_numpy(dtype=np.float32)
        self.adata.uns[self.keys.uns]["batch_effects"] = [f"{key}:{category}" for key, category in effects.columns]


# -- reading columns of obs ----------------------------------------------------------------------------
def _column(obs: pd.DataFrame, key: str) -> pd.Series:
    if key not in obs.columns:
        raise InputError(f"adata.obs has no column {key!r}, which the model reads as a covariate; add it, "
                         "or name an existing column")
    column = obs[key]
    n_missing = int(column.isna().sum())
    if n_missing:
        raise InputError(f"adata.obs[{key!r}] is missing (NaN) for {n_missing} cells; fill it in or drop "
                         "those cells before using it as a covariate")
    return column


def _as_text(column: pd.Series) -> np.ndarray:
    return np.asarray(column.astype(str), dtype=str)


def _categories(column: pd.Series) -> tuple[str, ...]:
    # the categorical's own order where it has one (unused categories dropped), else sorted values
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(column.unique())
        order = [c for c in column.cat.categories if c in present]
    else:
        values = pd.unique(column.to_numpy())
        try:
            order = sorted(values)
        except TypeError:  # mixed types: sort as text
            order = sorted(values, key=str)
    cats = tuple(str(c) for c in order)
    if len(set(cats)) != len(cats):
        raise InputError(f"adata.obs[{column.name!r}] holds distinct values with the same text "
                         f"({', '.join(cats[:5])}); make its categories distinct strings")
    return cats


def _numbers(obs: pd.DataFrame, key: str) -> np.ndarray:
    column = _column(obs, key)
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise InputError(f"adata.obs[{key!r}] is not numeric (dtype {column.dtype}), so it cannot be a "
                         "continuous covariate; convert it to numbers, or list it as a categorical covariate")
    values = column.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"adata.obs[{key!r}] holds {int((~np.isfinite(values)).sum())} infinite values; "
                         "replace them before using it as a covariate")
    return values
