"""The user-facing siVAE: AnnData in, embeddings out, save and load.

The torch maths lives in module.py and the optimisation in train.py; this file turns an AnnData
into tensors, writes results back under documented keys, and keeps models on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from anndata import AnnData
from safetensors.torch import load_file, save_file

from ._constants import FILES, KEYS, OutputKeys, output_keys
from ._errors import InputError
from .data import validate
from .data.backed import BackedCellMatrix, is_backed, training_matrix
from .data.feature_input import METHODS as FEATURE_INPUT_METHODS
from .data.feature_input import feature_input
from .data.loaders import CellMatrix
from .module import LIKELIHOODS, VARIANCES, ModuleConfig, SIVAEModule
from .train import TrainConfig, Trainer, TrainingData

_CHUNK = 1024  # cells per forward pass when embedding or scoring


@dataclass(frozen=True)
class ModelConfig:
    """Every constructor argument of a model; saved whole to config.json."""

    n_latent: int = 2
    gamma: float = 0.05
    likelihood: str = "gaussian"
    linear: bool = False
    variance: str = "cell"
    encoder_hidden: tuple[int, ...] = (1024, 512, 128)
    decoder_hidden: tuple[int, ...] | None = None  # None: the encoder's, reversed
    feature_input: str = "pca"
    c_red: int = 100
    # PCA of X^T over at most this many training cells (a uniform sample): its cost grows with
    # the cells it reads, and 50,000 cells pin down the features' covariances; None: all.
    feature_input_cells: int | None = 50_000
    cell_type_key: str | None = None
    batch_size: int = 256
    feature_batch_size: int | None = None
    learning_rate: float = 1e-3
    l2: float = 1e-3
    holdout_fraction: float = 0.1
    patience: int = 20
    seed: int = 0

    @property
    def decoder_sizes(self) -> tuple[int, ...]:
        return tuple(self.decoder_hidden) if self.decoder_hidden is not None else tuple(reversed(self.encoder_hidden))

    def check(self) -> None:
        """Refuse impossible settings with one sentence each."""
        if self.n_latent < 1:
            raise InputError(f"n_latent must be at least 1, got {self.n_latent}")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.variance not in VARIANCES:
            raise InputError(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.feature_input not in FEATURE_INPUT_METHODS:
            raise InputError(f"feature_input must be one of {FEATURE_INPUT_METHODS}, got {self.feature_input!r}")
        if not self.gamma >= 0:  # also refuses nan
            raise InputError(f"gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise InputError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction}")
        sizes = [*self.encoder_hidden, *self.decoder_sizes, self.batch_size, self.c_red]
        optional = [v for v in (self.feature_batch_size, self.feature_input_cells) if v is not None]
        if any(int(s) < 1 for s in [*sizes, *optional]):
            raise InputError("hidden sizes, batch_size, feature_batch_size, feature_input_cells and "
                             "c_red must be positive integers")


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks CUDA when present, else the CPU; under torchrun, CUDA is GPU ``LOCAL_RANK``."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    return dev


class BaseModel:
    """Shared machinery of SIVAE and the baselines; subclasses choose the module and the keys."""

    _name: ClassVar[str] = "base"
    _has_feature_path: ClassVar[bool] = False

    def __init__(
        self,
        adata: AnnData,
        *,
        device: str = "auto",
        _config: ModelConfig | None = None,
        _feature_x: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}; read files with sivae.read()")
        names = {f.name for f in fields(ModelConfig)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"{type(self).__name__} got unknown arguments {unknown}; see help({type(self).__name__})")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        self.config = _config or ModelConfig(**kwargs)
        self.config.check()
        self.adata = adata
        self.device = resolve_device(device)
        self.keys: OutputKeys = output_keys(self._name)
        self.feature_names = np.asarray(adata.var_names, dtype=str)
        self.history: list[dict[str, Any]] = []
        self._check_adata(adata)
        self.cells = self._source(adata)  # the scaled cells the model trains on, by row
        self._split(adata)
        self.feature_x = None
        if self._has_feature_path:
            self.feature_x = _feature_x if _feature_x is not None else self._feature_input(adata)
        torch.manual_seed(self.config.seed)
        self.module = self._build_module().to(self.device)
        self.is_trained = False

    # -- construction ---------------------------------------------------------------------------
    def _check_adata(self, adata: AnnData) -> None:
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}; read files with sivae.read()")
        validate.check_not_empty(adata)
        validate.check_unique_names(adata)
        c = self.config
        if is_backed(adata):
            # finite values and constant features were checked by the passes that scaled it
            if c.likelihood == "nb":
                raise InputError("likelihood 'nb' needs the counts in memory; use 'gaussian' with "
                                 "backed input, or load the data with sivae.read")
        else:
            validate.check_finite(adata.X, "adata.X")
            constant = validate.constant_features(adata.X)
            if constant.any():
                raise InputError(
                    f"{int(constant.sum())} features are constant across cells (e.g. {adata.var_names[constant][0]}); "
                    "drop them, or run sivae.pp.preprocess, which does"
                )
        c_red = c.c_red if self._has_feature_path else None
        validate.check_size(adata.n_obs, n_latent=c.n_latent, c_red=c_red, holdout_fraction=c.holdout_fraction)
        if c.likelihood == "nb":
            if KEYS.COUNTS not in adata.layers:
                raise InputError(
                    f"likelihood 'nb' needs raw counts in adata.layers['{KEYS.COUNTS}']; run sivae.pp.preprocess on the counts first"
                )
            validate.check_counts(adata.layers[KEYS.COUNTS], f"adata.layers['{KEYS.COUNTS}']")
        if c.cell_type_key is not None and c.cell_type_key not in adata.obs:
            raise InputError(f"cell_type_key {c.cell_type_key!r} is not a column of adata.obs; pass one of {list(adata.obs.columns)[:8]}")

    def _split(self, adata: AnnData) -> None:
        rng = np.random.default_rng(self.config.seed)
        order = rng.permutation(adata.n_obs)
        _, n_val = validate.split_sizes(adata.n_obs, self.config.holdout_fraction)
        self.val_idx, self.train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    def _source(self, adata: AnnData) -> CellMatrix | BackedCellMatrix:
        """Rows of ``adata`` as the model reads them: in memory, or from its file per batch."""
        return training_matrix(adata) if is_backed(adata) else CellMatrix(adata.X)

    def _feature_input(self, adata: AnnData) -> torch.Tensor:
        c = self.config
        c_red = min(c.c_red, len(self.train_idx), adata.n_vars if c.feature_input == "pca" else c.c_red)
        if c_red < c.c_red:
            warnings.warn(f"c_red lowered from {c.c_red} to {c_red}: it cannot exceed the training cells or features", stacklevel=3)
        rows = self.train_idx
        if c.feature_input == "pca" and c.feature_input_cells is not None and len(rows) > c.feature_input_cells:
            rows = np.sort(np.random.default_rng(c.seed).choice(rows, c.feature_input_cells, replace=False))
        labels = None
        if c.feature_input == "downsample" and c.cell_type_key is not None:
            labels = np.asarray(adata.obs[c.cell_type_key])[rows]
        reduced = feature_input(self.cells, rows, method=c.feature_input, c_red=c_red,
                                labels=labels, seed=c.seed)
        return torch.from_numpy(reduced)

    def _module_config(self) -> ModuleConfig:
        c = self.config
        return ModuleConfig(
            n_features=len(self.feature_names), n_latent=c.n_latent, encoder_hidden=tuple(c.encoder_hidden),
            decoder_hidden=c.decoder_sizes, likelihood=c.likelihood, variance=c.variance, linear=c.linear,
            gamma=c.gamma, n_feature_input=0 if self.feature_x is None else self.feature_x.shape[1],
        )

    def _build_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _default_feature_batch(self) -> int:
        # a VAE scores a feature for B x H multiply-adds: all features up to 2,048 per step
        return 2048

    # -- training -------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int = 200,
        *,
        pretrain_epochs: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        progress: bool = True,
    ) -> BaseModel:
        """Train the model, then write its results into ``self.adata``.

        Parameters
        ----------
        max_epochs
            Passes over the training cells in the last (joint) step.
        pretrain_epochs
            Limit on passes in each pre-training step, which stops early on held-out cells like
            the joint step; None: ``max_epochs``.
        checkpoint_dir
            Folder for a checkpoint written every ``checkpoint_every`` epochs (atomically).
        resume
            Continue from the checkpoint in ``checkpoint_dir``.
        progress
            Show a progress bar with the step, losses and ETA.

        Returns
        -------
        The model. Writes ``adata.obsm["X_<key>"]`` (posterior means of z), ``adata.varm["<key>_loadings"]``
        (posterior means of v, where the model has loadings), ``adata.var["<key>_centrality"]``
        (1 - MSE / variance per feature on training cells), ``adata.obs["sivae_split"]`` and
        ``adata.uns["<key>"]`` (parameters, losses, version).
        """
        if max_epochs < 1 or (pretrain_epochs is not None and pretrain_epochs < 0) or checkpoint_every < 1:
            raise InputError("max_epochs and checkpoint_every must be >= 1 and pretrain_epochs >= 0")
        c = self.config
        train_config = TrainConfig(
            max_epochs=max_epochs, pretrain_epochs=pretrain_epochs, batch_size=c.batch_size,
            feature_batch_size=c.feature_batch_size or self._default_feature_batch(),
            learning_rate=c.learning_rate, l2=c.l2,
            patience=c.patience, checkpoint_every=checkpoint_every, seed=c.seed,
        )
        counts = CellMatrix(self.adata.layers[KEYS.COUNTS]) if c.likelihood == "nb" else None
        data = TrainingData(cells=self.cells, train_idx=self.train_idx, val_idx=self.val_idx,
                            feature_x=self.feature_x, counts=counts)
        trainer = Trainer(self.module, data, train_config, device=self.device, progress=progress)
        t0 = time.perf_counter()
        self.history = trainer.fit(checkpoint_dir=checkpoint_dir, resume=resume)
        self.training_seconds = time.perf_counter() - t0
        self.is_trained = True
        self._write_outputs()
        return self

    # -- results --------------------------------------------------------------------------------
    def _chunks(self, cells: CellMatrix | BackedCellMatrix, rows: np.ndarray):
        # (row indices, their scaled values on the model's device), _CHUNK cells at a time
        for s in range(0, len(rows), _CHUNK):
            chunk = rows[s : s + _CHUNK]
            yield chunk, cells.rows(chunk).to(self.device)

    @torch.no_grad()
    def _embed(self, cells: CellMatrix | BackedCellMatrix) -> np.ndarray:
        self.module.eval()
        out = [self.module.cell_embedding(x).cpu() for _, x in self._chunks(cells, np.arange(len(cells)))]
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.n_latent), dtype=np.float32)

    @torch.no_grad()
    def _decoded_features(self) -> torch.Tensor:
        """v_{f,L} of every feature at the posterior means, (F, H)."""
        self.module.eval()
        idx = torch.arange(len(self.feature_names), device=self.device)
        fx = None if self.feature_x is None else self.feature_x.to(self.device)
        return self.module.feature_decoded(fx, idx)

    def get_loadings(self) -> np.ndarray | None:
        """Feature embedding, F x K: posterior means of v_{f,1} (None for a model without one)."""
        return None

    @torch.no_grad()
    def get_reconstruction_accuracy(self, adata: AnnData | None = None) -> np.ndarray:
        """Per-feature 1 - MSE / variance of the reconstruction at the posterior means, (F,).

        On ``adata`` (all its cells) when given, else on the training cells. For "nb" the
        comparison is in log1p(TP10K) space.
        """
        if adata is None:
            rows, cells = self.train_idx, self.cells
            counts = self.adata.layers[KEYS.COUNTS] if self.config.likelihood == "nb" else None
        else:
            cells = self._other_cells(adata)
            rows, counts = np.arange(adata.n_obs), None
            if self.config.likelihood == "nb":
                counts = CellMatrix(adata[:, self.feature_names].layers[KEYS.COUNTS])
        if counts is not None and not isinstance(counts, CellMatrix):
            counts = CellMatrix(counts)
        v_L = self._decoded_features()
        idx = torch.arange(v_L.shape[0], device=self.device)
        sse = torch.zeros(v_L.shape[0], dtype=torch.float64)
        s1 = torch.zeros_like(sse)
        s2 = torch.zeros_like(sse)
        for chunk, x in self._chunks(cells, rows):
            pred = self.module.predict(x, v_L, idx)
            if counts is None:
                truth = x
            else:
                raw = counts.rows(chunk).to(self.device)
                truth = torch.log1p(raw / raw.sum(1, keepdim=True).clamp_min(1.0) * 1e4)
                pred = torch.log1p(pred * 1e4)
            sse += (truth - pred).double().pow(2).sum(0).cpu()
            s1 += truth.double().sum(0).cpu()
            s2 += truth.double().pow(2).sum(0).cpu()
        n = len(rows)
        var = (s2 / n - (s1 / n) ** 2).clamp_min(1e-12)
        return (1.0 - (sse / n) / var).numpy()

    def _write_outputs(self) -> None:
        adata, k = self.adata, self.keys
        adata.obsm[k.cell_embedding] = self._embed(self.cells)
        loadings = self.get_loadings()
        if loadings is not None:
            adata.varm[k.loadings] = loadings
        adata.var[k.centrality] = self.get_reconstruction_accuracy()
        split = np.full(adata.n_obs, "train", dtype=object)
        split[self.val_idx] = "validation"
        adata.obs[KEYS.SPLIT] = split
        adata.uns[k.uns] = self._summary()

    def _summary(self) -> dict[str, Any]:
        from . import __version__

        params = {key: (list(v) if isinstance(v, tuple) else ("none" if v is None else v))
                  for key, v in asdict(self.config).items()}
        losses = {key: np.asarray([h[key] for h in self.history]) for key in (self.history[0] if self.history else {})}
        return {"model": self._name, "version": __version__, "params": params, "losses": losses,
                "training_seconds": float(getattr(self, "training_seconds", 0.0))}

    def _other_cells(self, adata: AnnData) -> CellMatrix | BackedCellMatrix:
        """Rows of another AnnData, restricted and ordered to the model's features."""
        if is_backed(adata):
            if not np.array_equal(np.asarray(adata.var_names, dtype=str), self.feature_names):
                raise InputError("a backed AnnData must hold exactly the model's features, in order; "
                                 "subset it with adata[:, features] before sivae.pp.preprocess")
            return training_matrix(adata)
        return CellMatrix(self._aligned_matrix(adata))

    def _aligned_matrix(self, adata: AnnData) -> Any:
        """adata's matrix restricted and ordered to the model's features, in the training space."""
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}")
        missing = np.setdiff1d(self.feature_names, np.asarray(adata.var_names, dtype=str))
        if len(missing):
            raise InputError(
                f"{len(missing)} of the model's {len(self.feature_names)} features are missing from the data "
                f"(e.g. {', '.join(missing[:3])}); embed data measured on the same features"
            )
        validate.check_unique_names(adata)
        X = adata[:, self.feature_names].X
        validate.check_finite(X, "adata.X")
        return X

    def get_cell_embedding(self, adata: AnnData | None = None) -> np.ndarray:
        """Cell embedding (posterior means of z_{c,1}), C x K, of ``adata`` or the training data.

        ``adata`` must hold the model's features (any order, others ignored), preprocessed the same
        way as the training data (e.g. with ``sivae.pp.preprocess``).
        """
        return self._embed(self.cells if adata is None else self._other_cells(adata))

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the model to folder ``path``: config.json and model.safetensors (no pickle).

        The folder is written under a temporary name and renamed, so it is whole or absent.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} exists and is not a folder; choose another path for the model")
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; pass overwrite=True (--force on the command line) to replace it")
        parent = path.resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise InputError(f"cannot write to {parent}; choose a folder you can write to")
        from . import __version__

        config = {"model": self._name, "version": __version__, "config": asdict(self.config),
                  "feature_names": self.feature_names.tolist(), "n_train": len(self.train_idx),
                  "is_trained": self.is_trained}
        tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        if self.feature_x is not None:
            tensors["feature_x"] = self.feature_x.contiguous()
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
        try:
            (tmp / FILES.CONFIG).write_text(json.dumps(config, indent=1))
            save_file(tensors, str(tmp / FILES.WEIGHTS))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike, adata: AnnData, *, device: str = "auto") -> BaseModel:
        """Load a model saved with :meth:`save` and attach it to ``adata`` (same features, same order)."""
        meta, tensors = read_model_files(path)
        if meta["model"] != cls._name:
            raise InputError(f"{path} holds a {meta['model']} model, not {cls._name}; load it with sivae.load_model")
        saved = np.asarray(meta["feature_names"], dtype=str)
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}")
        current = np.asarray(adata.var_names, dtype=str)
        if len(saved) != len(current) or not np.array_equal(saved, current):
            missing, extra = len(np.setdiff1d(saved, current)), len(np.setdiff1d(current, saved))
            hint = ("reorder it with adata[:, features]" if missing == extra == 0
                    else f"{missing} of the model's features are missing and {extra} are new")
            raise InputError(f"the data's features do not match the model's ({hint}); use the data the model was trained on")
        cfg = dict(meta["config"])
        for key in ("encoder_hidden", "decoder_hidden"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        if cls._has_feature_path and "feature_x" not in tensors:
            raise InputError(f"{path} lacks the feature-wise input of a {cls._name} model; re-save the model")
        self = cls.__new__(cls)
        BaseModel.__init__(self, adata, device=device, _config=ModelConfig(**cfg), _feature_x=tensors.get("feature_x"))
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        try:
            self.module.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(f"{path} does not match its own config.json (weights of another shape); re-save the model") from err
        self.is_trained = bool(meta.get("is_trained", True))
        return self


def read_model_files(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """config.json and model.safetensors of a saved model, refusing anything malformed."""
    path = Path(path)
    config_path, weights_path = path / FILES.CONFIG, path / FILES.WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(f"{path} is not a saved sivae model (it needs {FILES.CONFIG} and {FILES.WEIGHTS})")
    try:
        meta = json.loads(config_path.read_text())
        if not isinstance(meta, dict) or not all(k in meta for k in ("model", "config", "feature_names")):
            raise ValueError("it lacks the keys model, config and feature_names")
        if not isinstance(meta["config"], dict) or not isinstance(meta["feature_names"], list):
            raise ValueError("config must be an object and feature_names a list")
        unknown = set(meta["config"]) - {f.name for f in fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{config_path} is corrupt or not a sivae config ({err}); re-save the model") from err
    try:
        tensors = load_file(str(weights_path))
    except Exception as err:  # safetensors refuses truncated files and pickles alike
        raise InputError(f"{weights_path} is not a valid safetensors file (truncated, corrupt or a pickle); re-save the model") from err
    return meta, tensors


class SIVAE(BaseModel):
    """Scalable, interpretable VAE (Choi & Quon): a cell embedding and the feature embedding that explains it.

    Parameters
    ----------
    adata
        Cells x features, ``adata.X`` z-scored per feature (``sivae.pp.preprocess`` does this).
        For ``likelihood="nb"``, raw counts in ``adata.layers["counts"]``.
    n_latent
        K, the size of both embeddings.
    gamma
        Weight of the interpretability term (eq. 13); 0 gives the paper's siVAE (gamma=0).
    likelihood
        "gaussian" on scaled data (default) or "nb" on counts (siVAE-NB, eq. 14-18).
    linear
        siVAE-linear (eq. 19-20): linear decoders, mean v_{f,1} . z_{c,1}.
    variance
        "cell": one variance per cell from z_{c,L} (eq. 8); "feature": one per feature.
    encoder_hidden, decoder_hidden
        Hidden sizes; the paper's genomic defaults are 1024-512-128 and 128-512-1024.
    feature_input, c_red, cell_type_key, feature_input_cells
        How each feature's column over cells is reduced to C_red values: "pca" (default; PCA
        of X^T over at most ``feature_input_cells`` training cells, streamed from memory or
        disk) or "downsample" (stratified by ``adata.obs[cell_type_key]`` when given).
    batch_size, feature_batch_size
        Cells per step; features scored per step (None: ``max(512, 2 * batch_size)``, all
        features when there are fewer; every loss term is rescaled so a block is unbiased).
    learning_rate, l2, holdout_fraction, patience, seed
        Adam's rate, L2 weight, held-out cells for early stopping, epochs without improvement
        before stopping, and the seed of everything random.
    device
        "auto" (CUDA when present), "cpu" or "cuda".
    """

    _name = "sivae"
    _has_feature_path = True

    def __init__(self, adata: AnnData, *, n_latent: int = 2, gamma: float = 0.05, likelihood: str = "gaussian",
                 linear: bool = False, device: str = "auto", **kwargs: Any) -> None:
        super().__init__(adata, n_latent=n_latent, gamma=gamma, likelihood=likelihood, linear=linear,
                         device=device, **kwargs)

    def _build_module(self) -> torch.nn.Module:
        return SIVAEModule(self._module_config())

    def _default_feature_batch(self) -> int:
        # Each scored feature also runs the feature-wise networks (C_red x 1024 ... 1024: about
        # 1.3M multiply-adds, what one cell costs the cell-wise networks), so score about two
        # features per cell in the batch. This keeps a step near a VAE's cost (benchmarks/
        # train_speed.py) and matched the VAE's 15-NN accuracy on pbmc68k_reduced as closely as
        # scoring all 765 features did.
        return max(512, 2 * self.config.batch_size)

    @torch.no_grad()
    def get_loadings(self) -> np.ndarray:
        """siVAE loadings: posterior means of v_{f,1}, F x K (paper: the matrix V)."""
        self.module.eval()
        return self.module.feature_embedding(self.feature_x.to(self.device)).cpu().numpy()


def load_model(path: str | os.PathLike, adata: AnnData, *, device: str = "auto") -> BaseModel:
    """Load any saved sivae model (SIVAE, VAE or LDVAE), choosing the class from its config.json."""
    from .baselines import LDVAE, VAE

    meta, _ = read_model_files(path)
    classes = {cls._name: cls for cls in (SIVAE, VAE, LDVAE)}
    if meta["model"] not in classes:
        raise InputError(f"{path} holds an unknown model type {meta['model']!r}; was it written by a newer sivae?")
    return classes[meta["model"]].load(path, adata, device=device)
