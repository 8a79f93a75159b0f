"""Every setting of a model, in one frozen dataclass saved whole to config.json.

Each setting is declared once, with its default, type, range and help (sivae.settings); its
checks, ``sivae fit``'s option and the documentation below follow from that declaration. Settings
are checked when a model is built and when a saved config.json is read back, so a hand-edited or
foreign file is refused with one sentence rather than a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from .. import _params
from .._errors import InputError
from .._params import check_memory, is_int
from ..data.feature_input import METHODS as FEATURE_INPUT_METHODS
from ..nn.module import LIKELIHOODS, VARIANCES, ModuleConfig
from ..settings import Interval, check, document, refuse_unknown, same_as, setting
from ..train.config import TrainConfig

__all__ = ["LIKELIHOODS", "VARIANCES", "ModelConfig", "check_fits_in_memory", "is_int", "resolve_device"]


@document
@dataclass(frozen=True)
class ModelConfig:
    """Every constructor argument of a model (SIVAE, VAE, LDVAE); saved whole to config.json.

    The architecture settings are declared by module.ModuleConfig and the optimisation settings
    (batch_size ... seed) by train_config.TrainConfig, each once, and taken over here by name; this
    class declares the rest (the feature input, the held-out split).
    """

    n_latent: int = same_as(ModuleConfig, "n_latent")
    gamma: float = same_as(ModuleConfig, "gamma")
    likelihood: str = same_as(ModuleConfig, "likelihood")
    linear: bool = same_as(ModuleConfig, "linear")
    variance: str = same_as(ModuleConfig, "variance")
    encoder_hidden: tuple[int, ...] = same_as(ModuleConfig, "encoder_hidden")
    decoder_hidden: tuple[int, ...] | None = setting(
        None, "hidden widths of the decoders; None: the encoder's, reversed", range=Interval(1))
    feature_input: str = setting(
        "pca", "how each feature's column over cells is reduced to c_red values: pca (of X^T over at "
        "most feature_input_cells training cells) or downsample (stratified by cell_type_key)",
        choices=FEATURE_INPUT_METHODS)
    c_red: int = setting(100, "values per feature fed to the feature-wise encoder", range=Interval(1))
    # PCA of X^T over at most this many training cells (a uniform sample): its cost grows with
    # the cells it reads, and 50,000 cells pin down the features' covariances; None: all.
    feature_input_cells: int | None = setting(
        50_000, "training cells the feature input's PCA reads at most (a uniform sample); None: all",
        range=Interval(1))
    cell_type_key: str | None = setting(
        None, "column of adata.obs that stratifies feature_input='downsample'")
    # covariates (models/covariates.py): columns of adata.obs, categories fixed when the model is built
    batch_key: str | None = setting(
        None, "column of adata.obs naming each cell's batch (sample, lane, technology): a categorical "
        "covariate of the cell-wise decoder with its own effect on every feature")
    categorical_covariate_keys: tuple[str, ...] = setting(
        (), "further categorical columns of adata.obs (donor, ...), comma-separated on the command line",
        cli="--covariates")
    continuous_covariate_keys: tuple[str, ...] = setting(
        (), "numeric columns of adata.obs (pct_mito, ...), standardised with the training cells' mean "
        "and sd", cli="--continuous-covariates")
    encode_covariates: bool = same_as(ModuleConfig, "encode_covariates")
    batch_size: int = same_as(TrainConfig, "batch_size")
    feature_batch_size: int | None = same_as(TrainConfig, "feature_batch_size")
    learning_rate: float = same_as(TrainConfig, "learning_rate")
    l2: float = same_as(TrainConfig, "l2")
    holdout_fraction: float = setting(
        0.1, "share of the cells held out for early stopping (below a half: the model trains on the rest)",
        range=Interval(0, 0.5))
    patience: int = same_as(TrainConfig, "patience")
    seed: int = same_as(TrainConfig, "seed")

    @property
    def decoder_sizes(self) -> tuple[int, ...]:
        return tuple(self.decoder_hidden) if self.decoder_hidden is not None else tuple(reversed(self.encoder_hidden))

    @classmethod
    def from_saved(cls, values: dict[str, Any], path: Any) -> ModelConfig:
        """The settings in a saved config.json, refusing unknown ones and values of the wrong type."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{path}/config.json has unknown settings {unknown}; was it written by a newer sivae?")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            config = cls(**values)
            config.check()
        except InputError as err:
            raise InputError(f"{path}/config.json is invalid: {err}; re-save the model") from err
        return config

    @classmethod
    def from_arguments(cls, kwargs: dict[str, Any], where: str) -> ModelConfig:
        """The settings a model was given as keyword arguments, checked; lists become tuples."""
        refuse_unknown(cls, kwargs, where)
        config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
        config.check()
        return config

    @property
    def covariate_keys(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The categorical covariates' columns (the batch first) and the continuous ones'."""
        batch = () if self.batch_key is None else (self.batch_key,)
        return batch + tuple(self.categorical_covariate_keys), tuple(self.continuous_covariate_keys)

    def check(self) -> None:
        """Refuse impossible settings, and values of the wrong type, with one sentence each."""
        check(self)
        keys = [k for group in self.covariate_keys for k in group]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise InputError(f"the adata.obs column(s) {twice} are given as covariates more than once "
                             "(batch_key, categorical_covariate_keys, continuous_covariate_keys); name each once")


def check_fits_in_memory(module: torch.nn.Module, what: str) -> None:
    """Refuse a network whose weights (and Adam's two moments) cannot fit in this process's memory."""
    n = sum(p.numel() for p in module.parameters())
    check_memory(4 * n * 4, f"{what} has {n:,} weights and", "choose smaller hidden sizes")  # float32
    # weights, gradients and Adam's two moments


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks CUDA when present, else the CPU; under torchrun, CUDA is GPU ``LOCAL_RANK``;
    devices that cannot hold data ("meta") are refused (see sivae._params.device)."""
    return _params.device(device)
