"""Cross-validated evaluation of cell embeddings, as the paper measures them (Fig. 2b, S3).

The protocol behind the embedding benchmarks (benchmarks/embedding_quality.py and the scripts
that share its folds): a public module for them and for anyone who wants to score an embedding
method the same way, kept out of the ``sivae.tl`` namespace of analyses of one fitted model.

Stratified k-fold cross-validation where every model sees the training folds only: the
preprocessing (highly variable genes, per-feature z-score) is fitted on the training cells and
replayed on the held-out cells, the model is trained on the training cells, the held-out cells are
embedded with its encoder, and a k-NN classifier fitted on the training embedding labels them.

``cross_validate`` takes any *embedder*, a function ``(train, test) -> (train_embedding,
test_embedding)``, so siVAE, the baselines, PCA and scvi-tools' models are scored the same way;
``model_embedder`` and ``pca_embedder`` build the usual ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from . import _params
from ._arrays import _labels, _matrix, _positive_int
from ._constants import KEYS
from ._errors import InputError
from .data.preprocess import preprocess, scale_features
from .data.record import Preprocessing
from .data.validate import constant_features

Embedder = Callable[[AnnData, AnnData], tuple[np.ndarray, np.ndarray]]

# The paper's k: 80 on the 177k-cell fetal liver atlas, 15 on the image sets. We use 80 only where
# the data are large (>= 5,000 cells) and every class keeps at least 80 cells in a training fold,
# so a class's neighbourhood can be filled with its own cells; otherwise 15.
_K_SMALL, _K_LARGE, _LARGE_DATA = 15, 80, 5000
PREPROCESS_MODES = ("auto", "counts", "scale", "none")


def default_k(labels: Any, *, n_folds: int = 5) -> int:
    """The number of neighbours the paper's protocol uses for these labels.

    Parameters
    ----------
    labels
        One label per cell.
    n_folds
        Folds of the cross-validation (a training fold holds ``(n_folds - 1) / n_folds`` of a class).

    Returns
    -------
    int
        80 when there are at least 5,000 cells and every class has at least 80 cells in each
        training fold, else 15.
    """
    y = np.asarray(labels, dtype=object)
    n_folds = _positive_int(n_folds, "n_folds", minimum=2)
    _, counts = np.unique(y.astype(str), return_counts=True)
    smallest_training_class = int(np.floor(counts.min() * (n_folds - 1) / n_folds))
    if len(y) >= _LARGE_DATA and smallest_training_class >= _K_LARGE:
        return _K_LARGE
    return _K_SMALL


def stratified_folds(labels: Any, *, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled k-fold split of the cells (scikit-learn ``StratifiedKFold``).

    Parameters
    ----------
    labels
        One label per cell, e.g. ``adata.obs["cell_type"]``; every label needs ``n_folds`` cells.
    n_folds
        Number of folds (at least 2).
    seed
        Seed of the shuffle.

    Returns
    -------
    list of (train_idx, test_idx)
        Integer row indices; the test sets are disjoint and together cover every cell once.
    """
    y = np.asarray(labels, dtype=object)
    y = _labels(y, "labels", len(y))
    n_folds, seed = _positive_int(n_folds, "n_folds", minimum=2), _params.seed(seed)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"labels must have at least 2 distinct values; got {len(classes)}")
    if counts.min() < n_folds:
        raise InputError(f"label {classes[counts.argmin()]!r} has {counts.min()} cells, fewer than "
                         f"n_folds={n_folds}; drop it or lower n_folds")
    split = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in split.split(np.zeros(len(y)), y)]


def heldout_knn_accuracy(train_embedding: Any, train_labels: Any, test_embedding: Any,
                         test_labels: Any, *, k: int = 15) -> float:
    """Accuracy of a k-NN classifier fitted on the training cells, scored on held-out cells.

    Parameters
    ----------
    train_embedding, test_embedding
        Cells x dimensions, the same dimensions in both.
    train_labels, test_labels
        One label per row of each.
    k
        Neighbours per prediction (at most the number of training cells).

    Returns
    -------
    float
        Fraction of held-out cells whose label the classifier predicts, in [0, 1].
    """
    x_tr, x_te = _matrix(train_embedding, "train_embedding"), _matrix(test_embedding, "test_embedding")
    y_tr = _labels(train_labels, "train_labels", x_tr.shape[0])
    y_te = _labels(test_labels, "test_labels", x_te.shape[0])
    k = _positive_int(k, "k")
    if x_tr.shape[1] != x_te.shape[1]:
        raise InputError(f"train_embedding has {x_tr.shape[1]} dimensions but test_embedding has "
                         f"{x_te.shape[1]}; embed both with the same model")
    if k > x_tr.shape[0]:
        raise InputError(f"k={k} exceeds the {x_tr.shape[0]} training cells; lower k")
    classifier = KNeighborsClassifier(n_neighbors=k).fit(x_tr, y_tr)
    return float(np.mean(classifier.predict(x_te) == y_te))


def _is_counts(X: Any) -> bool:
    values = X.data if sp.issparse(X) else np.asarray(X)
    return bool(values.size) and bool(np.all(values >= 0)) and bool(np.all(np.mod(values, 1) == 0))


def split_fold(adata: AnnData, train_idx: np.ndarray, test_idx: np.ndarray, *,
               preprocess_mode: str = "auto", n_top_genes: int | None = 2000) -> tuple[AnnData, AnnData]:
    """The training and held-out cells of one fold, preprocessed from the training cells alone.

    Parameters
    ----------
    adata
        All cells. Raw counts in ``X`` for ``"counts"``; normalised values for ``"scale"``.
    train_idx, test_idx
        Disjoint row indices.
    preprocess_mode
        ``"counts"``: `sivae.pp.preprocess` on the training cells (TP10K, log1p, ``n_top_genes``
        HVG, z-score); the held-out cells get the same library-size normalisation, the same genes
        and the training means and standard deviations. ``"scale"``: z-score with the training
        cells' means and standard deviations, after dropping the features constant in the training
        cells (e.g. blank border pixels). ``"none"``: as they are. ``"auto"``: ``"counts"``
        when ``X`` holds non-negative integers, else ``"scale"``.
    n_top_genes
        Highly variable genes kept in ``"counts"`` mode (None: all).

    Returns
    -------
    (train, test)
        New AnnData objects. In ``"counts"`` mode both carry the raw counts of the kept genes in
        ``layers["counts"]`` (for the negative binomial models) and the training one the
        ``var["sivae_mean"]``/``var["sivae_std"]`` used for both.
    """
    if preprocess_mode not in PREPROCESS_MODES:
        raise InputError(f"preprocess_mode must be one of {PREPROCESS_MODES}, got {preprocess_mode!r}")
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    if np.intersect1d(train_idx, test_idx).size:
        raise InputError("train_idx and test_idx share cells; a held-out cell must never be trained on")
    mode = preprocess_mode
    if mode == "auto":
        mode = "counts" if _is_counts(adata.X) else "scale"
    train, test = adata[train_idx].copy(), adata[test_idx].copy()
    if mode == "none":
        return train, test
    if mode == "scale":
        varying = ~constant_features(train.X)  # constant in the training cells: no signal, refused by models
        train, test = train[:, varying].copy(), test[:, varying].copy()
        scale_features(train, progress=False)
        # the training z-score in float64 (Preprocessing.apply works in float32: the benchmarks'
        # figures were measured on these values)
        X = test.X.toarray() if sp.issparse(test.X) else np.asarray(test.X, dtype=np.float64)
        X = (X - train.var[KEYS.FEATURE_MEAN].to_numpy()) / train.var[KEYS.FEATURE_STD].to_numpy()
        max_value = train.uns[KEYS.PREPROCESS].get("max_value")
        test.X = np.clip(X, -max_value, max_value).astype(np.float32) if max_value else X.astype(np.float32)
        return train, test
    preprocess(train, n_top_genes=n_top_genes, progress=False)
    # the held-out cells as a model trained on `train` would treat new cells (sivae.pp.apply)
    return train, Preprocessing.of(train).apply(test)


class model_embedder:  # noqa: N801 - used like the function pca_embedder
    """An embedder that trains ``model_class`` (SIVAE, VAE, LDVAE) on the training cells.

    The held-out cells are embedded with the trained encoder, ``model.get_cell_embedding(test)``;
    the training cells by the model's own pass over them. ``model_kwargs`` go to the constructor
    (``n_latent``, ``gamma``, ``likelihood``, ...); ``max_epochs``, ``pretrain_epochs`` and
    ``pretraining`` (SIVAE only: "finetune", "paper", "budget") go to ``train``; training shows no
    progress bar. The latest fold's model stays in ``last_model``.
    """

    def __init__(self, model_class: type, *, max_epochs: int = 100, pretrain_epochs: int | None = None,
                 pretraining: str | None = None, **model_kwargs: Any) -> None:
        self.model_class, self.model_kwargs = model_class, model_kwargs
        self.train_kwargs: dict[str, Any] = {"max_epochs": max_epochs, "pretrain_epochs": pretrain_epochs}
        if pretraining is not None:
            self.train_kwargs["pretraining"] = pretraining
        self.last_model: Any = None

    def __call__(self, train: AnnData, test: AnnData) -> tuple[np.ndarray, np.ndarray]:
        model = self.model_class(train, **self.model_kwargs)
        model.train(**self.train_kwargs, progress=False)
        self.last_model = model
        return model.get_cell_embedding(), model.get_cell_embedding(test)


def pca_embedder(n_components: int) -> Embedder:
    """An embedder that fits scikit-learn's PCA on the training cells and projects both sets."""
    n_components = _positive_int(n_components, "n_components")

    def embed(train: AnnData, test: AnnData) -> tuple[np.ndarray, np.ndarray]:
        dense = [m.toarray() if sp.issparse(m) else np.asarray(m) for m in (train.X, test.X)]
        pca = PCA(n_components=n_components, random_state=0).fit(dense[0])
        return pca.transform(dense[0]), pca.transform(dense[1])

    return embed


def cross_validate(
    adata: AnnData,
    embedder: Embedder,
    *,
    label_key: str = KEYS.CELL_TYPE,
    n_folds: int = 5,
    seed: int = 0,
    k: int | None = None,
    preprocess_mode: str = "auto",
    n_top_genes: int | None = 2000,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
    key_added: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame:
    """k-NN accuracy of held-out cells in stratified k-fold cross-validation (paper Fig. 2b, S3).

    For each fold: `split_fold` (preprocessing fitted on the training cells only), then
    ``embedder(train, test)`` (trained on ``train`` only), then `heldout_knn_accuracy`.

    Parameters
    ----------
    adata
        All cells with labels in ``adata.obs[label_key]``.
    embedder
        ``(train, test) -> (train_embedding, test_embedding)``, e.g. `model_embedder` or
        `pca_embedder`.
    label_key
        Column of ``adata.obs`` with the cell types.
    n_folds, seed
        Folds of `stratified_folds` and their shuffle seed.
    k
        Neighbours of the classifier; None: `default_k` (15 under 5,000 cells, 80 where every
        class has enough cells).
    preprocess_mode, n_top_genes
        As in `split_fold`.
    folds
        Explicit (train_idx, test_idx) pairs instead of `stratified_folds`.
    key_added, inplace
        Where the table is stored in ``adata.uns``; None: ``"sivae_cross_validation"`` (the
        key rule of ``sivae.tl``). ``inplace=False``: store nothing, only return it.

    Returns
    -------
    pandas.DataFrame
        One row per fold: ``fold``, ``n_train``, ``n_test``, ``k``, ``accuracy``, ``seconds``
        (preprocessing, training and embedding). Written to ``adata.uns[key_added]``
        (default ``"sivae_cross_validation"``).
    """
    if label_key not in adata.obs:
        raise InputError(f"adata.obs has no column {label_key!r}; pass label_key= the cell-type column")
    labels = _labels(adata.obs[label_key].to_numpy(), f"adata.obs[{label_key!r}]", adata.n_obs)
    folds = folds if folds is not None else stratified_folds(labels, n_folds=n_folds, seed=seed)
    k = default_k(labels, n_folds=n_folds) if k is None else _positive_int(k, "k")
    rows = []
    for i, (train_idx, test_idx) in enumerate(folds):
        t0 = time.perf_counter()
        train, test = split_fold(adata, train_idx, test_idx, preprocess_mode=preprocess_mode,
                                 n_top_genes=n_top_genes)
        z_train, z_test = embedder(train, test)
        seconds = time.perf_counter() - t0
        if len(z_train) != len(train_idx) or len(z_test) != len(test_idx):
            raise InputError(f"the embedder returned {len(z_train)} and {len(z_test)} rows for "
                             f"{len(train_idx)} training and {len(test_idx)} held-out cells")
        acc = heldout_knn_accuracy(z_train, labels[train_idx], z_test, labels[test_idx], k=k)
        rows.append({"fold": i, "n_train": len(train_idx), "n_test": len(test_idx), "k": k,
                     "accuracy": acc, "seconds": seconds})
    table = pd.DataFrame(rows)
    if inplace:
        adata.uns[KEYS.CROSS_VALIDATION if key_added is None else key_added] = table
    return table
