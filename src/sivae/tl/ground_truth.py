"""Ground-truth gene centrality (paper, Methods): how much of all other genes one gene predicts.

Per query gene q, a small network maps x_q to every other gene; q's ground-truth centrality is the
percentage of variance explained (PVE), 1 - Var(x_g - x_hat_g) / Var(x_g), averaged over the other
genes g. All F networks train at once as one grouped model (see _grouped.py).

Cost. The paper's networks (1 -> 128-512-1024 -> F) hold about 0.6M + 1024 F weights each, 2.6M
per gene at F = 2,000, so 2,000 of them need 20 GB and ~10^13 multiply-adds per epoch of 10,000
cells. Two choices make it minutes instead: smaller hidden layers (default 32-16; a network with
one input only has to learn a 1-D curve per output), and targets compressed to the other genes'
top ``n_components`` principal components (default 64): the squared error on all F genes of a
prediction P V^T, V the top components, is the error on the components plus a constant, so the
networks train on (G, B, 64) targets rather than (G, B, F). The PVE is then measured on every
gene, excluding q, on held-out cells: F x (cells x F x n_components) multiply-adds, chunked.
Measured on 2 CPU cores: see benchmarks/networks.py (pbmc3k, 2,000 genes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from ._grouped import (_MIN_VAR, GroupedMLP, check_training, dense_cells, split_cells, standardise,
                       train_grouped)

_EVAL_BYTES = 128 * 2**20  # one (queries x cells x genes) block of held-out predictions


def centrality_ground_truth(
    adata: AnnData,
    *,
    genes: Sequence[str] | None = None,
    hidden: Sequence[int] = (32, 16),
    n_components: int | None = 64,
    epochs: int = 10,
    patience: int | None = None,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    holdout_fraction: float = 0.2,
    max_cells: int | None = 10_000,
    layer: str | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> pd.Series:
    """Per gene, the mean PVE of all other genes predicted from it by a small network.

    Parameters
    ----------
    adata
        Cells x genes, scaled (e.g. by ``sivae.pp.preprocess``); reads ``adata.X`` or
        ``adata.layers[layer]``.
    genes
        Query genes (names in ``adata.var_names``) to train networks for; None: every gene.
        The paper's network sizes cost ~200x the default per gene, so they are affordable on a
        subset only; the other genes get NaN. Every gene is still predicted and scored.
    hidden
        Hidden widths of each gene's network (the paper's: 128, 512, 1024, at ~200x the cost).
    n_components
        Principal components of the genes the networks are trained to predict; None: all genes.
    epochs, batch_size, learning_rate
        Adam on the training cells; ``epochs`` is the most it runs.
    patience
        Early stopping as in the paper: a tenth of the training cells (seeded) is kept for
        validation, each network keeps the weights of its best validation epoch, and training
        ends once the networks' summed validation error has not improved for ``patience`` epochs. None: ``epochs`` epochs on all
        the training cells.
    holdout_fraction
        Cells held out (seeded) on which the PVE is measured.
    max_cells
        At most this many cells (a seeded sample) are used; None: all.
    seed
        Seed of the split, the sample and the networks.
    key_added
        Column of ``adata.var`` the result is written to; None: ``"sivae_ground_truth_centrality"``
        (the key rule of ``sivae.tl``).

    Returns
    -------
    pandas.Series
        Ground-truth centrality per gene (indexed by ``adata.var_names``; NaN for genes not in
        ``genes``), also written to ``adata.var[key_added]``.
    """
    queries = _query_rows(adata, genes)
    patience = _params.optional_count(patience, "patience")
    hidden, epochs, batch_size, learning_rate, holdout_fraction, max_cells, seed = check_training(
        hidden, epochs, batch_size, learning_rate, holdout_fraction, max_cells, seed)
    n_components = _params.optional_count(n_components, "n_components")
    X = dense_cells(adata, layer, max_cells, seed)
    n_cells, n_genes = X.shape
    if n_genes < 2 or n_cells < 10:
        raise InputError(f"ground-truth centrality needs at least 2 genes and 10 cells; got {n_cells} x {n_genes}")
    train, held_out = split_cells(n_cells, holdout_fraction, seed)
    X = torch.from_numpy(X)
    X = standardise(X, train)  # (C, F)
    basis = _components(X[train], n_components)  # (F, r)
    targets = X @ basis  # (C, r)
    validation = None
    if patience is not None:  # a tenth of the training cells decides when each network stops
        fit_rows, kept_rows = split_cells(len(train), 0.1, seed + 1)
        train, kept = train[fit_rows], train[kept_rows]
        validation = _inputs_targets(X, targets, queries, torch.from_numpy(kept))
    torch.manual_seed(seed)
    model = GroupedMLP(len(queries), 1, tuple(hidden), basis.shape[1])
    train_grouped(model, len(train), lambda rows: _inputs_targets(X, targets, queries, torch.from_numpy(train[rows])),
                  epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                  validation=validation, patience=patience)
    truth = np.full(n_genes, np.nan)
    truth[queries] = _held_out_pve(model, X[torch.from_numpy(held_out)], basis, queries)
    key_added = KEYS.GROUND_TRUTH_CENTRALITY if key_added is None else key_added
    result = pd.Series(truth, index=adata.var_names.copy(), name=key_added)
    adata.var[key_added] = result.to_numpy()
    return result


def _query_rows(adata: AnnData, genes: Sequence[str] | None) -> np.ndarray:
    # positions of the query genes in var_names, every gene for None
    if genes is None:
        return np.arange(adata.n_vars)
    names = [genes] if isinstance(genes, str) else list(genes)
    position = adata.var_names.get_indexer(names)
    if not names or (position < 0).any():
        missing = [g for g, i in zip(names, position) if i < 0][:5]
        raise InputError(f"genes must name genes of adata.var_names; {missing or 'none was given'} "
                         "not found: pass names from adata.var_names, or None for every gene")
    return np.unique(position)


def _inputs_targets(X: torch.Tensor, targets: torch.Tensor, queries: np.ndarray,
                    rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # network i reads query gene queries[i] of these cells: (G, B, 1) inputs, (G, B, r) targets
    inputs = X[rows][:, torch.from_numpy(queries)].T.unsqueeze(-1)
    return inputs, targets[rows].expand(len(queries), -1, -1)


@torch.no_grad()
def _held_out_pve(model: GroupedMLP, X: torch.Tensor, basis: torch.Tensor, queries: np.ndarray) -> np.ndarray:
    # per query, mean over g != q of 1 - Var(x_g - x_hat_g) / Var(x_g); network i is query gene queries[i]
    n_cells, n_genes = X.shape
    var = X.var(0)  # (F,)
    valid = var > _MIN_VAR  # genes constant on the held-out cells have no PVE: left out
    var = var.clamp_min(_MIN_VAR)
    out = np.empty(len(queries))
    step = max(1, _EVAL_BYTES // (4 * n_cells * n_genes))
    for s in range(0, len(queries), step):
        groups = torch.arange(s, min(s + step, len(queries)))
        q = torch.from_numpy(queries[s : s + len(groups)])
        predicted = _forward_slice(model, groups, X[:, q].T.unsqueeze(-1)) @ basis.T  # (b, C, F)
        others = valid[None].repeat(len(q), 1)  # (b, F)
        others[torch.arange(len(q)), q] = False  # leave each query gene out of its own mean
        ratio = (X[None] - predicted).var(1) / var  # (b, F)
        out[s : s + len(q)] = (1.0 - (ratio * others).sum(1) / others.sum(1).clamp_min(1)).numpy()
    return out


def _forward_slice(model: GroupedMLP, groups: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # the networks of ``groups`` only
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        x = torch.baddbmm(b[groups], x, w[groups])
        if i < last:
            x = torch.relu(x)
    return x


def _components(X: torch.Tensor, n_components: int | None) -> torch.Tensor:
    # (F, r) top right singular vectors of the training cells; the identity for None
    n_genes = X.shape[1]
    if n_components is None or n_components >= min(X.shape):
        return torch.eye(n_genes) if n_components is None or n_components >= n_genes else _svd(X, min(X.shape))
    if n_components < 1:
        raise InputError(f"n_components must be >= 1 or None; got {n_components}")
    return _svd(X, n_components)


def _svd(X: torch.Tensor, r: int) -> torch.Tensor:
    _, _, vt = torch.linalg.svd(X.double(), full_matrices=False)
    return vt[:r].T.float().contiguous()


def centrality_ground_truth_binned(
    adata: AnnData,
    *,
    n_bins: int = 10,
    max_cells: int | None = 10_000,
    layer: str | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> pd.Series:
    """A ground truth without networks: per gene, the mean share of other genes' variance its bins explain.

    The cells are cut into up to ``n_bins`` quantile bins of the query gene q (tied values, such
    as the many zeros of a sparse gene, share a bin); for every other gene g, the between-bin
    share of its variance is taken as ANOVA's omega squared, (SS_between - (k - 1) MS_within) /
    (SS_total + MS_within), which removes what k bin means explain by chance. q's centrality is
    the mean over g != q. No training: it checks `centrality_ground_truth` with a non-parametric
    regression of each gene on q (a step function of q's quantiles instead of a network).

    Parameters
    ----------
    adata
        Cells x genes, scaled; reads ``adata.X`` or ``adata.layers[layer]``.
    n_bins
        At most this many quantile bins per query gene (at least 2).
    max_cells, layer, seed
        As in `centrality_ground_truth` (``seed`` picks the sample of cells).
    key_added
        Column of ``adata.var`` the result is written to; None: not written.

    Returns
    -------
    pandas.Series
        Per gene, named "ground_truth_binned" (NaN for a gene constant across the cells).
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise InputError(f"n_bins must be an integer >= 2; got {n_bins!r}")
    X = dense_cells(adata, layer, max_cells, seed).astype(np.float64)
    n_cells, n_genes = X.shape
    if n_genes < 2 or n_cells < 2 * n_bins:
        raise InputError(f"the binned ground truth needs at least 2 genes and {2 * n_bins} cells; got {n_cells} x {n_genes}")
    X -= X.mean(0)
    total = (X ** 2).sum(0)  # SS_total per gene
    valid = total > _MIN_VAR * n_cells
    out = np.full(n_genes, np.nan)
    step = max(1, _EVAL_BYTES // (8 * n_bins * n_genes))
    for start in range(0, n_genes, step):
        queries = [q for q in range(start, min(start + step, n_genes)) if valid[q]]
        if queries:
            out[queries] = _binned_pve(X, queries, n_bins, total, valid)
    result = pd.Series(out, index=adata.var_names.copy(), name="ground_truth_binned")
    if key_added is not None:
        adata.var[key_added] = out
    return result


def _binned_pve(X: np.ndarray, queries: list[int], n_bins: int, total: np.ndarray, valid: np.ndarray) -> np.ndarray:
    # mean omega squared of the other valid genes, for each query gene, its bins as one sparse product
    n_cells = X.shape[0]
    labels, starts = [], [0]
    for q in queries:
        edges = np.unique(np.quantile(X[:, q], np.linspace(0, 1, n_bins + 1)[1:-1]))
        _, bins = np.unique(np.searchsorted(edges, X[:, q], side="left"), return_inverse=True)
        labels.append(bins + starts[-1])
        starts.append(starts[-1] + int(bins.max()) + 1)
    rows = np.concatenate(labels)
    onehot = sp.csr_matrix((np.ones(rows.size), (rows, np.tile(np.arange(n_cells), len(queries)))),
                           shape=(starts[-1], n_cells))
    sums = onehot @ X  # (all bins, F): per bin, the sum of each gene
    sizes = np.asarray(onehot.sum(1)).ravel()
    between = np.add.reduceat(sums ** 2 / sizes[:, None], starts[:-1], axis=0)  # (queries, F): SS_between
    k = np.diff(starts)[:, None]
    within = (total - between) / np.maximum(n_cells - k, 1)  # MS_within
    others = np.broadcast_to(valid, between.shape).copy()
    others[np.arange(len(queries)), queries] = False
    omega = np.where(others, (between - (k - 1) * within) / np.where(others, total + within, 1.0), 0.0)
    return omega.sum(1) / np.maximum(others.sum(1), 1)
