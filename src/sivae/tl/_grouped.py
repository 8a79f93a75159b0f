"""Many small independent MLPs trained as one batched model (grouped weights and torch.bmm).

The ground-truth centrality trains one network per query gene and the neighbourhood benchmark one
per (method, query gene); looping over thousands of tiny networks would leave the CPU idle between
kernel launches, so group g's layer l is the slice W_l[g] of one (G, in, out) tensor and a whole
minibatch of all groups is a chain of torch.baddbmm calls. Groups share no parameters and the loss
is a sum over groups, so each group's gradient is exactly that of its own training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from torch import nn

from sivae import _params
from sivae._errors import InputError

_MIN_VAR = 1e-8


class GroupedMLP(nn.Module):
    """G independent ReLU MLPs of the same shape, n_in -> hidden ... -> n_out."""

    def __init__(self, n_groups: int, n_in: int, hidden: Sequence[int], n_out: int) -> None:
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        n_weights = n_groups * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        _params.check_memory(16.0 * n_weights, f"{n_groups:,} networks of widths {tuple(hidden)}",
                             "choose smaller hidden widths or fewer genes")  # float32 weights, grads, Adam
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n_groups, a, b) * (2.0 / a) ** 0.5) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n_groups, 1, b)) for b in sizes[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(G, B, n_in) -> (G, B, n_out)."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x


def train_grouped(
    model: GroupedMLP,
    n_cells: int,
    batch: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    patience: int | None = None,
) -> int:
    """Adam on the summed per-group mean squared error, over minibatches of cell indices.

    ``batch(rows)`` returns the (G, B, n_in) inputs and (G, B, n_out) targets of those cells.
    With ``validation`` = (inputs, targets) of cells kept out of training and a ``patience``,
    each network keeps the weights of its own best validation epoch, and training stops once
    no network has improved for ``patience`` epochs (or at ``epochs``). Returns the epochs run.
    """
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    best = _BestWeights(model) if validation is not None and patience is not None else None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n_cells)
        for s in range(0, n_cells, batch_size):
            inputs, targets = batch(order[s : s + batch_size])
            loss = (model(inputs) - targets).pow(2).mean((1, 2)).sum()  # groups are independent
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if not torch.isfinite(loss) or not all(torch.isfinite(p).all() for p in model.parameters()):
            raise InputError(f"the networks' training diverged (loss {float(loss.detach())}) with learning_rate="
                             f"{learning_rate:g}; use a smaller learning rate")
        if best is not None and best.update(model, validation, epoch) and epoch - best.last_improved >= patience:
            break
    if best is not None:
        best.restore(model)
    model.eval()
    return epoch + 1


class _BestWeights:
    """Each group's weights at its lowest validation error so far (per-network early stopping).

    Training as a whole stops when the summed validation error has not fallen by a thousandth
    for ``patience`` epochs: with many networks one of them nearly always improves a little by
    chance, so waiting until none does would run every fit to ``epochs``.
    """

    def __init__(self, model: GroupedMLP) -> None:
        self.loss = None
        self.best_total = float("inf")
        self.state = [p.detach().clone() for p in model.parameters()]
        self.last_improved = 0

    @torch.no_grad()
    def update(self, model: GroupedMLP, validation: tuple[torch.Tensor, torch.Tensor], epoch: int) -> bool:
        """Keep the groups that improved; True when the summed error did not improve this epoch."""
        model.eval()
        inputs, targets = validation
        loss = (model(inputs) - targets).pow(2).mean((1, 2))  # (G,)
        improved = torch.ones_like(loss, dtype=torch.bool) if self.loss is None else loss < self.loss
        self.loss = loss if self.loss is None else torch.where(improved, loss, self.loss)
        for kept, p in zip(self.state, model.parameters()):
            kept[improved] = p.detach()[improved]
        total = float(loss.sum())
        if total < self.best_total * (1 - 1e-3):
            self.best_total, self.last_improved = total, epoch
            return False
        return True

    @torch.no_grad()
    def restore(self, model: GroupedMLP) -> None:
        for kept, p in zip(self.state, model.parameters()):
            p.copy_(kept)


def check_training(hidden: Any, epochs: Any, batch_size: Any, learning_rate: Any, holdout_fraction: Any,
                   max_cells: Any, seed: Any) -> tuple[tuple[int, ...], int, int, float, float, int | None, int]:
    """The settings every grouped-network tool shares, checked before any data is read."""
    return (_params.sizes(hidden, "hidden"), _params.count(epochs, "epochs"),
            _params.count(batch_size, "batch_size"), _params.learning_rate(learning_rate),
            _params.fraction(holdout_fraction, "holdout_fraction", closed_high=False),
            _params.optional_count(max_cells, "max_cells"), _params.seed(seed))


def split_cells(n_cells: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), a seeded random split with at least 2 cells on each side."""
    order = np.random.default_rng(seed).permutation(n_cells)
    n_out = min(max(2, int(round(holdout_fraction * n_cells))), n_cells - 2)
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def pve(truth: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """1 - Var(truth - prediction) / Var(truth) along the cells axis -2 (paper, Methods).

    NaN where the truth is constant on these cells (sparse genes on few held-out cells).
    """
    residual = (truth - prediction).var(-2)
    var = truth.var(-2)
    return torch.where(var > _MIN_VAR, 1.0 - residual / var.clamp_min(_MIN_VAR), torch.nan)


def standardise(X: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """Z-score the columns of X with the mean and s.d. of ``rows``; constant columns only centred."""
    mean, sd = X[rows].mean(0), X[rows].std(0)
    return (X - mean) / torch.where(sd > 1e-6, sd, torch.ones_like(sd))


def dense_cells(adata: AnnData, layer: str | None, max_cells: int | None, seed: int) -> np.ndarray:
    # adata.X (or a layer) as dense float32, of a seeded sample of at most max_cells cells
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData; got {type(adata).__name__}")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata.layers has no {layer!r}; choose one of {list(adata.layers)} or None for adata.X")
    rows = np.arange(adata.n_obs)
    if max_cells is not None and adata.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
    X = adata.X if layer is None else adata.layers[layer]
    X = X[rows]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.array(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise InputError("the expression matrix holds NaN or infinite values; remove or impute them first")
    return X
