"""The user-facing siVAE: AnnData in, embeddings out, save and load.

The torch maths lives in nn/module.py and the optimisation in train/trainer.py; this file turns an AnnData
into tensors, writes results back under documented keys, and keeps models on disk.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np
import torch
from anndata import AnnData
from .._constants import KEYS, OutputKeys, output_keys
from .._errors import InputError, TrainingDiverged
from ..data import validate
from ..data.backed import BackedCellMatrix, is_backed, training_matrix
from .config import ModelConfig, check_fits_in_memory, resolve_device
from .covariates import CovariateCoding, CovariatesMixin, covariate_rows
from ..settings import refuse_unknown
from ..data.feature_input import feature_input
from ..data.loaders import CellMatrix, cells_on_features
from ..data.record import Preprocessing
from ..distributed import gather_blocks, my_block, reduce_over_ranks
from ..nn.module import ModuleConfig, SIVAEModule
from .sampling import draw_cells
from .saving import check_same_run, read_model_folder, register, run_id, write_model_folder
from .accuracy import accuracy_from_sums, check_formula, constant_in_sums
from .scoring import ScoringMixin
from ..train.trainer import TrainConfig, Trainer, TrainingData, data_fingerprint
from ..train.config import shared_with


class BaseModel(ScoringMixin, CovariatesMixin):
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
        _preprocessing: Preprocessing | None = None,
        _covariates: CovariateCoding | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(adata, AnnData):
            raise InputError(f"expected an AnnData, got {type(adata).__name__}; read files with sivae.read()")
        # every setting is declared, defaulted and checked in ModelConfig (sivae.models.config)
        self.config = _config or ModelConfig.from_arguments(kwargs, type(self).__name__)
        self.adata = adata
        self.device = resolve_device(device)
        self.keys: OutputKeys = output_keys(self._name)
        self.feature_names = np.asarray(adata.var_names, dtype=str)
        self.history: list[dict[str, Any]] = []
        self._check_adata(adata)
        self.cells = self._source(adata)  # the scaled cells the model trains on, by row
        self._split(adata)
        # covariates from adata.obs (in memory, also when X is backed): coded as at fit time when loaded
        cat_keys, cont_keys = self.config.covariate_keys
        self.covariate_coding = _covariates or CovariateCoding.fit(adata.obs, cat_keys, cont_keys, self.train_idx)
        self.covariates = None if self.covariate_coding is None else self.covariate_coding.encode(adata.obs)
        self.feature_x = None
        if self._has_feature_path:
            self.feature_x = _feature_x if _feature_x is not None else self._feature_input(adata)
        with torch.device("meta"):  # shapes only, no memory: refuse what cannot fit before allocating
            check_fits_in_memory(self._build_module(), f"a {type(self).__name__} of these sizes")
        torch.manual_seed(self.config.seed)
        self.module = self._build_module().to(self.device)
        self.is_trained = False
        # how the training cells were preprocessed, to treat new cells the same way (None: unknown)
        self.preprocessing = _preprocessing if _preprocessing is not None else Preprocessing.of(adata)

    # -- construction ---------------------------------------------------------------------------
    def _check_adata(self, adata: AnnData) -> None:
        c = self.config
        validate.check_training_data(
            adata, backed=is_backed(adata), likelihood=c.likelihood, n_latent=c.n_latent,
            c_red=c.c_red if self._has_feature_path else None, holdout_fraction=c.holdout_fraction,
            cell_type_key=c.cell_type_key)

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
        labels = None
        if c.feature_input == "downsample" and c.cell_type_key is not None:
            labels = np.asarray(adata.obs[c.cell_type_key])[self.train_idx]
        return torch.from_numpy(feature_input(self.cells, self.train_idx, method=c.feature_input, c_red=c.c_red,
                                              labels=labels, seed=c.seed, max_cells=c.feature_input_cells))

    def _module_config(self) -> ModuleConfig:
        c = self.config
        return ModuleConfig(
            n_features=len(self.feature_names), n_latent=c.n_latent, encoder_hidden=tuple(c.encoder_hidden),
            decoder_hidden=c.decoder_sizes, likelihood=c.likelihood, variance=c.variance, linear=c.linear,
            gamma=c.gamma, n_feature_input=0 if self.feature_x is None else self.feature_x.shape[1],
            n_cats_per_covariate=self.covariate_coding.n_cats if self.covariate_coding else (),
            n_continuous_covariates=len(self.covariate_coding.continuous) if self.covariate_coding else 0,
            encode_covariates=c.encode_covariates,
        )

    def _build_module(self) -> torch.nn.Module:
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int = TrainConfig.max_epochs,
        *,
        pretrain_epochs: int | None = TrainConfig.pretrain_epochs,
        pretraining: str = TrainConfig.pretraining,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = TrainConfig.checkpoint_every,
        resume: bool = False,
        progress: bool = True,
        **settings: Any,
    ) -> BaseModel:
        """Train the model, then write its results into ``self.adata``.

        Parameters
        ----------
        max_epochs
            Passes over the training cells in the last (joint) step.
        pretrain_epochs
            Limit on passes in each pre-training step (siVAE's steps 1 and 2); None: as
            ``pretraining`` says.
        pretraining
            "finetune" (default): step 1 is a VAE run (the same cell embedding as `VAE` with the
            same seed); the encoder is then frozen and steps 2 and 3 fit the feature-wise
            networks and decoders to it, each in at most a fifth of step 1's minibatch steps: a
            run costs 1.25-1.5x a VAE run. "paper": the paper's three steps, each to its own early stop,
            every parameter free in the joint step (2-3x a VAE run). "budget": short
            pre-training, then a full joint step. One class each in `sivae.train.modes`.
        checkpoint_dir
            Folder for a checkpoint written every ``checkpoint_every`` epochs (atomically).
        resume
            Continue from the checkpoint in ``checkpoint_dir``.
        progress
            Show a progress bar with the step, losses and ETA.
        **settings
            Any other setting of `sivae.train.config.TrainConfig` that the model does not hold
            (``pretrain_fraction``, ``pretrain_tolerance``, ``finetune_fraction``, ``grad_clip``,
            ``subnormals``); its help lists each one's default and range.

        Returns
        -------
        The model. Writes ``adata.obsm["X_<key>"]`` (posterior means of z), ``adata.varm["<key>_loadings"]``
        (posterior means of v, where the model has loadings), ``adata.var["<key>_centrality"]``
        (per feature, the correlation of reconstruction and data on training cells), ``adata.obs["sivae_split"]`` and
        ``adata.uns["<key>"]`` (parameters, losses, version).
        """
        self.require_data("train()")
        c = self.config
        shared = shared_with(ModelConfig)  # the model's own optimisation settings, handed over
        refuse_unknown(TrainConfig, settings, "train()")
        given = sorted(set(settings) & set(shared))
        if given:
            raise InputError(f"train() got {given}, which the model holds; give them to {type(self).__name__}()")
        train_config = TrainConfig(
            max_epochs=max_epochs, pretrain_epochs=pretrain_epochs, pretraining=pretraining,
            checkpoint_every=checkpoint_every, **settings, **{name: getattr(c, name) for name in shared})
        train_config.check()
        counts = CellMatrix(self.adata.layers[KEYS.COUNTS]) if c.likelihood == "nb" else None
        covariates = None if self.covariates is None else self.covariates.fingerprint(self.covariate_coding)
        data = TrainingData(cells=self.cells, train_idx=self.train_idx, val_idx=self.val_idx, feature_x=self.feature_x,
                            counts=counts, covariates=self.covariates,
                            fingerprint=data_fingerprint(self.feature_names, self.adata.obs_names, covariates))
        trainer = Trainer(self.module, data, train_config, device=self.device, progress=progress)
        self._training = {"max_epochs": int(max_epochs), "pretraining": pretraining,
                          "pretrain_epochs": "none" if pretrain_epochs is None else int(pretrain_epochs)}
        t0 = time.perf_counter()
        self.history = trainer.fit(checkpoint_dir=checkpoint_dir, resume=resume)
        self.training_seconds = time.perf_counter() - t0
        self.training_timings = trainer.timings  # per epoch: seconds of training and of evaluation
        self.is_trained = True
        t0 = time.perf_counter()
        self._write_outputs()
        self.output_seconds = time.perf_counter() - t0
        return self

    # -- results (the methods tl uses are in scoring.py) ----------------------------------------
    @torch.no_grad()
    def _embed(self, cells: CellMatrix | BackedCellMatrix, rows: np.ndarray | None = None,
               covariates: Any = None) -> np.ndarray:
        """Posterior means of z of ``rows`` of ``cells`` (all of them when None), with their CellCovariates."""
        self.module.eval()
        rows = np.arange(len(cells)) if rows is None else rows
        out = [self.module.cell_embedding(x, **covariate_rows(covariates, chunk, self.device)).cpu()
               for chunk, x in self.cell_chunks(cells, rows)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.n_latent), dtype=np.float32)

    def get_loadings(self) -> np.ndarray | None:
        """Feature embedding, F x K: posterior means of v_{f,1} (None for a model without one)."""
        return None

    @torch.no_grad()
    def get_reconstruction_accuracy(self, adata: AnnData | None = None, *, formula: str = "correlation") -> np.ndarray:
        """Per feature, how well the reconstruction at the posterior means follows the data, (F,).

        On ``adata`` (all its cells) when given, else on the training cells. ``formula``: the
        correlation of reconstruction and data (the default, siVAE's centrality), ``"r2"`` (1 -
        MSE / variance) or ``"paper"`` (1 - residual variance / variance); see
        `sivae.models.accuracy.accuracy_from_sums` for what each measured. For "nb" the comparison
        is in log1p(TP10K) space, against the value the model expects there (not the log of its
        expected count; see `reconstructions`). A feature (almost) constant on those cells
        (variance at most 1e-6 of the larger of its mean square and the median feature's
        variance) has nothing to follow: its accuracy is NaN rather than a division by rounding error.
        """
        check_formula(formula)  # before the pass over the cells
        if adata is None:
            self.require_data("get_reconstruction_accuracy() without new cells")
        n = len(self.train_idx) if adata is None else adata.n_obs
        return accuracy_from_sums(self.reconstruction_sums(adata), n=n, formula=formula)

    def _write_outputs(self) -> None:
        adata, k = self.adata, self.keys
        # under torchrun each rank embeds and scores its own block of cells, then the ranks share
        # them: every rank ends with the whole result having read only its share of the file
        start, stop = my_block(len(self.cells))
        embedding = gather_blocks(self._embed(self.cells, np.arange(start, stop), self.covariates), len(self.cells))
        start, stop = my_block(len(self.train_idx))
        sums = np.asarray(reduce_over_ranks(self.reconstruction_sums(rows=self.train_idx[start:stop])), dtype=np.float64)
        n = len(self.train_idx)
        centrality = accuracy_from_sums(sums, n=n)
        constant = constant_in_sums(sums, n)  # NaN by definition, not divergence
        loadings = self.get_loadings()
        for name, values in (("cell embedding", embedding), ("loadings", loadings), ("centrality", centrality[~constant])):
            if values is not None and not np.all(np.isfinite(values)):  # never hand back NaN as a result
                raise TrainingDiverged(f"training diverged: the {name} holds non-finite values, so "
                                       "nothing was written; lower learning_rate or gamma and train again")
        adata.obsm[k.cell_embedding] = embedding
        if loadings is not None:
            adata.varm[k.loadings] = loadings
        adata.var[k.centrality] = centrality
        split = np.full(adata.n_obs, "train", dtype=object)
        split[self.val_idx] = "validation"
        adata.obs[KEYS.SPLIT] = split
        adata.uns[k.uns] = self._summary()
        self.write_batch_effects()
        if constant.any():  # the reason for each NaN centrality, kept with the results
            names = self.feature_names[constant]
            adata.uns[k.uns]["centrality_undefined"] = names.tolist()
            warnings.warn(f"{constant.sum()} features are constant on the training cells (e.g. {names[0]}): their "
                          f"centrality var[{k.centrality!r}] is NaN; filter rarely detected genes to avoid it", stacklevel=3)

    def _summary(self) -> dict[str, Any]:
        from .. import __version__

        params = {key: (list(v) if isinstance(v, tuple) else ("none" if v is None else v))
                  for key, v in asdict(self.config).items()}
        losses = {key: np.asarray([h[key] for h in self.history]) for key in (self.history[0] if self.history else {})}
        return {"model": self._name, "version": __version__, "params": params, "losses": losses,
                "training": dict(getattr(self, "_training", {})),
                "training_seconds": float(getattr(self, "training_seconds", 0.0))}

    def get_cell_embedding(self, adata: AnnData | None = None, *, preprocess: bool = False) -> np.ndarray:
        """Cell embedding (posterior means of z_{c,1}), C x K, of ``adata`` or the training data.

        Parameters
        ----------
        adata
            New cells measured on the model's features (any order, other features ignored).
            Without ``preprocess`` they must be transformed as the training data were (e.g. by
            ``sivae.pp.apply(adata, model)``).
        preprocess
            ``adata.X`` holds what the training data held before preprocessing (raw counts, for
            a model trained after ``sivae.pp.preprocess``): replay the training preprocessing
            on it first (`sivae.pp.apply`).

        A model with covariates needs the new cells' covariate columns in ``adata.obs``, with
        categories it was trained on (mapping new batches is not supported yet), also where its
        encoder reads the expression alone (without ``encode_covariates``): cells of a batch the
        model never saw would be embedded with that batch's effect left in.
        """
        if adata is None:
            self.require_data("get_cell_embedding() without new cells")
            return self._embed(self.cells, covariates=self.covariates)
        covariates = self.cell_covariates(adata)  # checked before any work, read by the encoder or not
        if preprocess:
            adata = self.preprocess(adata)
        return self._embed(cells_on_features(adata, self.feature_names), covariates=covariates)

    def sample(self, n_cells: int, *, seed: int = 0, library: np.ndarray | None = None, batch: Any = None,
               covariates: dict[str, Any] | None = None) -> AnnData:
        """Draw cells from the trained generative model: z ~ N(0, I), x ~ p(x | z, a).

        siVAE-GRN is a network method run on these cells, e.g. ``sivae.tl.grn(model.sample(n))``.

        Parameters
        ----------
        n_cells
            Number of cells to draw.
        seed
            Seed of the draw; the same seed gives the same cells.
        library
            "nb" only: total counts of each drawn cell, (n_cells,); default a resample of the
            training cells' totals (needs the training data).
        batch
            Draw every cell as if from this batch (a category of ``batch_key``): short for
            ``covariates={batch_key: batch}``.
        covariates
            Values to draw every cell with, by ``adata.obs`` column: a category of a categorical
            covariate, a number (in the column's own units) of a continuous one. Covariates not
            given are taken from training cells drawn at random, one cell per drawn cell (this
            needs the training data).

        Returns
        -------
        AnnData
            ``n_cells`` x the model's features: scaled values in ``X`` (gaussian), or counts in
            ``X`` and ``layers["counts"]`` ("nb"); each covariate the cells were drawn with in
            ``obs`` under its column's name.
        """
        return draw_cells(self, n_cells, seed=seed, library=library, batch=batch, covariates=covariates)

    def preprocess(self, adata: AnnData) -> AnnData:
        """New cells transformed as the training cells were: a new AnnData on the model's features."""
        if self.preprocessing is None:
            raise InputError(
                f"this {type(self).__name__} does not know how its training data were preprocessed "
                "(they were not prepared with sivae.pp, or the model was saved before sivae recorded "
                "it); preprocess the new cells yourself and call get_cell_embedding without preprocess"
            )
        return self.preprocessing.apply(adata)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the model to folder ``path``: config.json, model.safetensors (no pickle) and
        preprocess.json (how the training cells were preprocessed, for embedding new raw cells).

        The folder is written under a temporary name and renamed, so it is whole or absent. With
        ``overwrite`` an existing *model* folder is replaced; any other folder is refused.
        """
        write_model_folder(path, **self.folder_contents(), overwrite=overwrite)

    def folder_contents(self) -> dict[str, Any]:
        """What ``save`` writes, as ``write_model_folder``'s keyword arguments (``meta``, ``tensors``,
        ``preprocessing``), for a writer that commits the folder together with other outputs
        (``sivae fit`` writes its h5ad and the model folder as one change)."""
        from .. import __version__

        meta = {"model": self._name, "version": __version__, "config": asdict(self.config),
                "feature_names": self.feature_names.tolist(), "n_train": len(self.train_idx),
                "is_trained": self.is_trained,
                "covariates": None if self.covariate_coding is None else self.covariate_coding.to_json()}
        meta.update(run_id(self.adata.uns.get(self.keys.uns) if self.adata is not None else None))
        tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        tensors.update({} if self.feature_x is None else {"feature_x": self.feature_x.contiguous()})
        return {"meta": meta, "tensors": tensors, "preprocessing": self.preprocessing}

    @classmethod
    def load(cls, path: str | os.PathLike, adata: AnnData | None = None, *, device: str = "auto") -> BaseModel:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        path
            The model folder.
        adata
            The data the model was trained on (its features in the same order), to analyse or
            train further; None: the model alone, to embed new cells with
            ``get_cell_embedding(new, preprocess=True)``.
        device
            "auto", "cpu" or "cuda".

        Weights' shapes are checked against config.json before the network is built.
        """
        folder = read_model_folder(path)
        meta = folder.meta
        if meta["model"] != cls._name:
            raise InputError(f"{path} holds a {meta['model']} model, not {cls._name}; load it with sivae.load_model")
        saved = np.asarray(meta["feature_names"], dtype=str)
        if adata is not None:
            validate.check_same_features(adata, saved)
        config = ModelConfig.from_saved(meta["config"], path)
        check_same_run(folder, None if adata is None else adata.uns.get(output_keys(cls._name).uns), "the AnnData")
        tensors = folder.tensors
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        if cls._has_feature_path and "feature_x" not in shapes:
            raise InputError(f"{path} lacks the feature-wise input of a {cls._name} model; re-save the model")
        self = cls.__new__(cls)
        self.config, self.feature_names = config, saved
        self.covariate_coding = CovariateCoding.from_json(meta.get("covariates"), f"{path}/config.json")
        self.feature_x = torch.empty(shapes["feature_x"], device="meta") if "feature_x" in shapes else None
        with torch.device("meta"):
            expected = {f"module.{k}": tuple(v.shape) for k, v in self._build_module().state_dict().items()}
        if "feature_x" in shapes:
            expected["feature_x"] = (len(saved), shapes["feature_x"][1])
        if expected != shapes:
            raise InputError(f"{path} does not match its own config.json (weights of other names or "
                             "shapes); re-save the model")
        if adata is not None:
            BaseModel.__init__(self, adata, device=device, _config=config, _feature_x=tensors.get("feature_x"),
                               _preprocessing=folder.preprocessing, _covariates=self.covariate_coding)
        else:
            self._detached(device, tensors.get("feature_x"), folder.preprocessing)
        self.module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
        self.is_trained = bool(meta.get("is_trained", True))
        if not folder.has_preprocessing_record:
            warnings.warn(f"{path} was saved before sivae kept the preprocessing with the model, so it "
                          "cannot embed raw counts (preprocess=True); re-save it to add the record",
                          UserWarning, stacklevel=2)
        return self

    def _detached(self, device: str, feature_x: torch.Tensor | None, preprocessing: Preprocessing | None) -> None:
        # a loaded model without its training data: it embeds new cells, nothing that needs the data
        self.adata, self.cells, self.history, self.covariates = None, None, [], None
        self.train_idx = self.val_idx = np.zeros(0, dtype=np.int64)
        self.device, self.keys = resolve_device(device), output_keys(self._name)
        self.feature_x, self.preprocessing = feature_x, preprocessing
        self.module = self._build_module().to(self.device)


@register
class SIVAE(BaseModel):
    """Scalable, interpretable VAE (Choi & Quon): a cell embedding and the feature embedding that explains it.

    Parameters
    ----------
    adata
        Cells x features, ``adata.X`` z-scored per feature (``sivae.pp.preprocess`` does this).
        For ``likelihood="nb"``, raw counts in ``adata.layers["counts"]``.
    n_latent, gamma, likelihood, linear, **kwargs
        The model's settings: K, the weight of the interpretability term (eq. 13; 0 gives the
        paper's siVAE), "gaussian" or "nb" (siVAE-NB, eq. 14-18), siVAE-linear (eq. 19-20), and
        any other setting of `sivae.models.config.ModelConfig` (hidden sizes, the feature input and
        C_red, batch sizes, learning rate, L2, held-out share, patience, seed, and the covariates:
        ``batch_key``, ``categorical_covariate_keys``, ``continuous_covariate_keys``, columns of
        ``adata.obs``, and ``encode_covariates``; see `get_batch_effects`), whose help lists
        every setting's default, accepted values and meaning.
    device
        "auto" (CUDA when present), "cpu" or "cuda".
    """

    _name = "sivae"
    _has_feature_path = True

    def __init__(self, adata: AnnData, *, n_latent: int = ModelConfig.n_latent, gamma: float = ModelConfig.gamma,
                 likelihood: str = ModelConfig.likelihood, linear: bool = ModelConfig.linear, device: str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(adata, n_latent=n_latent, gamma=gamma, likelihood=likelihood, linear=linear,
                         device=device, **kwargs)

    def _build_module(self) -> torch.nn.Module:
        return SIVAEModule(self._module_config())

    @torch.no_grad()
    def get_loadings(self) -> np.ndarray:
        """siVAE loadings: posterior means of v_{f,1}, F x K (paper: the matrix V)."""
        self.module.eval()
        return self.module.feature_embedding(self.feature_x.to(self.device)).cpu().numpy()
