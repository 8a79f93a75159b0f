"""What preprocessing did, written once for both paths: the record, the constant-feature rule, the replay.

- :class:`PreprocessRecord` is what `sivae.pp.preprocess` (in memory, or in passes over a backed
  file) and `sivae.pp.scale_features` write to ``adata.uns[KEYS.PREPROCESS]``.
- :func:`kept_features` is the one rule for features constant across cells, and
  :func:`subset_features` the one way both paths drop features from the user's AnnData.
- :class:`Preprocessing` is what a model keeps of it to treat new cells exactly as its training
  cells were treated (library size over the same genes, TP10K, log1p, the model's features, the
  stored z-score); it travels in the model folder as ``preprocess.json``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._constants import KEYS
from .._errors import InputError
from .transform import RowTransform
from .validate import check_anndata_matrices, check_counts, check_finite, check_unique_names


@dataclass(frozen=True)
class PreprocessRecord:
    """``adata.uns[KEYS.PREPROCESS]``: the parameters of a preprocessing run."""

    raw_counts: bool
    scaled: bool
    backed: bool = False
    n_features_in: int | None = None
    n_constant_dropped: int = 0
    target_sum: float | None = None
    log1p: bool = False
    n_top_genes: int | None = None
    highly_variable_flavor: str | None = None
    max_value: float | None = None
    std_ddof: int | None = None
    counts_layer: str | None = None
    n_features_out: int | None = None
    # genes whose counts make up a cell's library size: the input minus constant features
    library_features: tuple[str, ...] | None = None
    # the obs column across whose batches the highly variable genes were chosen (provenance only:
    # new cells are replayed on the model's features, whichever chose them)
    batch_key: str | None = None
    sivae_version: str = ""

    def as_uns(self) -> dict[str, Any]:
        out = asdict(self)
        out["sivae_version"] = self.sivae_version or _version()
        out["library_features"] = None if self.library_features is None else list(self.library_features)
        return out

    @classmethod
    def from_uns(cls, record: Any) -> PreprocessRecord | None:
        """The record in ``adata.uns``, or None when there is none (or it predates this class)."""
        if not isinstance(record, dict) or "scaled" not in record:
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values.setdefault("raw_counts", False)
        if values.get("library_features") is not None:
            values["library_features"] = tuple(str(g) for g in np.asarray(values["library_features"]).ravel())
        return cls(**values)


def scaled_record(existing: Any, max_value: float | None, *, backed: bool) -> dict[str, Any]:
    """The uns record after a z-score step, on top of what an earlier step recorded."""
    before = PreprocessRecord.from_uns(existing)
    record = before if before is not None else PreprocessRecord(raw_counts=False, scaled=True)
    return replace(record, scaled=True, backed=backed or record.backed, std_ddof=1,
                   max_value=None if max_value is None else float(max_value), sivae_version="").as_uns()


def kept_features(constant: np.ndarray, *, drop: bool, where: str) -> np.ndarray:
    """The features to keep given the constant ones: warn when dropping, refuse when all or not allowed."""
    n_constant, n = int(constant.sum()), len(constant)
    if n_constant == n:
        raise InputError(f"all {n_constant} features of {where} are constant across cells; check "
                         "that the matrix holds the expression data")
    if n_constant and not drop:
        raise InputError(f"{n_constant} of {n} features are constant across cells in {where} "
                         "(all-zero included); remove them or pass drop_constant=True")
    if n_constant:
        warnings.warn(f"dropped {n_constant} of {n} features that are constant across cells "
                      "(all-zero included)", UserWarning, stacklevel=4)
    return ~constant


def subset_features(adata: AnnData, keep: np.ndarray) -> None:
    """Keep only the features where ``keep`` is True, in place (``adata = adata[:, keep]``).

    anndata has no public in-place subset (scanpy's own filters call the private
    ``AnnData._inplace_subset_var``). Its public constructor accepts an AnnData and takes over
    that object's fields, so re-initialising ``adata`` from its subset copy does the same work,
    one copy of the kept features, through the public API.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return
    AnnData.__init__(adata, adata[:, keep].copy())


@dataclass(frozen=True)
class Preprocessing:
    """How a model's training cells were turned into model input, to replay on new cells.

    ``raw_counts``: the input were counts, normalised to ``target_sum`` per cell over
    ``library_features`` (all genes of the new data when None, as models saved by sivae 0.1
    recorded) and log1p-transformed. Then, always: the model's ``features`` in order, z-scored
    with ``mean`` and ``std`` and clipped at ``max_value``.
    """

    raw_counts: bool
    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_sum: float | None = None
    max_value: float | None = None
    library_features: tuple[str, ...] | None = None

    @classmethod
    def of(cls, adata: AnnData) -> Preprocessing | None:
        """What ``adata`` (the data a model trains on) records of its preprocessing; None when unknown."""
        record = PreprocessRecord.from_uns(adata.uns.get(KEYS.PREPROCESS))
        if record is None or not record.scaled or KEYS.FEATURE_MEAN not in adata.var:
            return None
        return cls(
            raw_counts=record.raw_counts, features=tuple(map(str, adata.var_names)),
            mean=tuple(map(float, adata.var[KEYS.FEATURE_MEAN])), std=tuple(map(float, adata.var[KEYS.FEATURE_STD])),
            target_sum=record.target_sum if record.raw_counts else None, max_value=record.max_value,
            library_features=record.library_features if record.raw_counts else None,
        )

    def to_json(self) -> dict[str, Any]:
        out = {"preprocessed": True, **asdict(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_json(cls, record: Any, where: str) -> Preprocessing | None:
        """Read a saved record (None for a model trained on data preprocessed elsewhere); refuse a bad one.

        Every field is checked for its type and range, so a hand-edited record (an infinite
        target sum, an empty list of library genes) is refused, never replayed into garbage.
        """
        if not isinstance(record, dict) or not isinstance(record.get("preprocessed"), bool):
            raise InputError(f"{where} is corrupt or incomplete (not a preprocessing record); re-save the model")
        if not record["preprocessed"]:
            return None
        try:
            return cls._checked(record)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            reason = f"no {err}" if isinstance(err, KeyError) else str(err)
            raise InputError(f"{where} is corrupt or incomplete ({reason}); re-save the model") from err

    @classmethod
    def _checked(cls, record: dict[str, Any]) -> Preprocessing:
        raw = record.get("raw_counts", True)  # sivae 0.1 recorded count data only
        if not isinstance(raw, bool):
            raise TypeError("raw_counts must be true or false")
        features = tuple(_strings(record["features"], "features"))
        mean = _numbers(record["feature_mean" if "feature_mean" in record else "mean"], "mean")
        std = _numbers(record["feature_std" if "feature_std" in record else "std"], "std")
        if not (len(features) == len(mean) == len(std)):
            raise ValueError("features, mean and std differ in length")
        if len(set(features)) != len(features) or not all(s > 0 for s in std):
            raise ValueError("duplicated features or a std that is not positive")
        target_sum = _positive(record.get("target_sum"), "target_sum")
        max_value = _positive(record.get("max_value"), "max_value")
        library = record.get("library_features")
        library = None if library is None else tuple(_strings(library, "library_features"))
        if raw and target_sum is None:
            raise ValueError("target_sum is missing for count data")
        if raw and library is not None and not set(features) <= set(library):
            raise ValueError("library_features must hold every feature of the model")
        return cls(raw_counts=raw, features=features, mean=mean, std=std, target_sum=target_sum,
                   max_value=max_value, library_features=library)

    def apply(self, adata: AnnData) -> AnnData:
        """A new AnnData of ``adata``'s cells on the model's features, transformed as in training.

        ``adata.X`` holds raw counts (``raw_counts``) or log-normalised values; genes may come in
        any order and genes the model does not use are ignored. The result keeps ``adata.obs``,
        the counts in ``layers[KEYS.COUNTS]`` (raw-count input) and the z-scored values in ``X``.
        """
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData of new cells, got {type(adata).__name__}")
        if adata.isbacked:  # the replay reads every cell and returns them in memory: read them once
            adata = adata.to_memory()
        check_unique_names(adata)
        check_anndata_matrices(adata)  # before any subset, which touches every matrix
        names = np.asarray(adata.var_names, dtype=str)
        columns = adata.var_names.get_indexer(list(self.features))
        if np.any(columns < 0):
            missing = [f for f, c in zip(self.features, columns) if c < 0]
            raise InputError(f"{len(missing)} of the model's {len(self.features)} features are missing from "
                             f"the data (e.g. {missing[0]!r}); embed cells measured on the same genes")
        check_finite(adata.X, "adata.X")
        X = sp.csr_matrix(adata.X, dtype=np.float32)
        library = None
        if self.raw_counts:
            check_counts(adata.X, "adata.X", hint="the model was trained on raw counts, so pass raw "
                         "counts; for data already scaled like the training data, skip preprocessing")
            in_library = np.ones(len(names), bool) if self.library_features is None \
                else np.isin(names, np.asarray(self.library_features, dtype=str))
            library = np.asarray(X[:, np.flatnonzero(in_library)].sum(1)).ravel()
        transform = RowTransform(library_size=library, target_sum=self.target_sum or 1e4,
                                 log1p=self.raw_counts, columns=columns, mean=np.asarray(self.mean),
                                 std=np.asarray(self.std), max_value=self.max_value)
        cells = adata[:, columns].copy()
        if self.raw_counts:
            cells.layers[KEYS.COUNTS] = sp.csr_matrix(cells.X, dtype=np.float32)
        cells.X = transform.apply(X.copy(), np.arange(adata.n_obs))
        return cells


def _strings(values: Any, name: str) -> list[str]:
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{name} must be a non-empty list of names")
    return values


def _numbers(values: Any, name: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise TypeError(f"{name} must be a list of numbers")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} holds non-finite values")
    return out


def _positive(value: Any, name: str) -> float | None:
    """None, or a finite positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def _version() -> str:
    from .. import __version__  # not the distribution's metadata: it is named sivae-torch

    return __version__
