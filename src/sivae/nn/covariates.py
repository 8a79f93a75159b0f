"""A cell's covariates as one vector a_c, and their per-feature effects beta (see sivae.nn.module).

Categorical covariates (the batch first) are one-hot encoded, continuous ones enter as values:
a_c = [onehot(s_{c,1}), ..., onehot(s_{c,J}), u_c], of width D = n_1 + ... + n_J + M. The same
vector feeds every layer of the cell-wise decoder (nn.mlp.MLP) and, optionally, the encoder; its
direct effect on the mean of X_{c,f} is beta_{c,f} = a_c . B_{:,f}, one row of B per category
and per continuous covariate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F_


@dataclass
class CovariateEffects:
    """Per-feature effects of the covariates, in the order the module was configured with.

    ``categorical[j]`` is (n_j, F): row s is category s's effect on each feature's mean (on the
    log-rate for "nb"), centred over the categories, so it reads as the category's departure
    from the average category. ``continuous`` is (M, F): the effect of one unit of each
    continuous covariate.
    """

    categorical: list[torch.Tensor]
    continuous: torch.Tensor


class Covariates(nn.Module):
    """The effects B (parameters, zero at start) and the covariate vector a_c of a batch of cells.

    Each categorical covariate's effects are centred over its categories before use: the feature
    intercept b_f already carries the average level, and without the centring b_f and the
    effects could trade a constant forever without changing the model.
    """

    def __init__(self, n_cats_per_covariate: Sequence[int], n_continuous: int, n_features: int) -> None:
        super().__init__()
        if any(n < 1 for n in n_cats_per_covariate) or n_continuous < 0:
            raise ValueError("every categorical covariate needs at least one category, and "
                             "n_continuous_covariates must be >= 0")
        self.n_cats = tuple(int(n) for n in n_cats_per_covariate)
        self.n_continuous = int(n_continuous)
        self.width = sum(self.n_cats) + self.n_continuous  # D
        self.categorical = nn.ParameterList([nn.Parameter(torch.zeros(n, n_features)) for n in self.n_cats])
        self.continuous = nn.Parameter(torch.zeros(self.n_continuous, n_features))

    def design(self, cat_covs: torch.Tensor | None, cont_covs: torch.Tensor | None) -> torch.Tensor:
        """a_c for a batch of cells, (B, D): category codes (B, J) long, continuous values (B, M)."""
        parts = []
        if self.n_cats:
            if cat_covs is None or cat_covs.dim() != 2 or cat_covs.shape[1] != len(self.n_cats):
                raise ValueError(f"this model has {len(self.n_cats)} categorical covariates: pass "
                                 f"cat_covs as a (cells, {len(self.n_cats)}) tensor of category codes")
            parts += [F_.one_hot(cat_covs[:, j].long(), n) for j, n in enumerate(self.n_cats)]
        if self.n_continuous:
            if cont_covs is None or cont_covs.dim() != 2 or cont_covs.shape[1] != self.n_continuous:
                raise ValueError(f"this model has {self.n_continuous} continuous covariates: pass "
                                 f"cont_covs as a (cells, {self.n_continuous}) tensor of values")
            parts.append(cont_covs)
        dtype = self.continuous.dtype
        return torch.cat([p.to(dtype) for p in parts], dim=1)

    def matrix(self) -> torch.Tensor:
        """B, (D, F): the categorical rows centred over each covariate's categories, then the continuous."""
        rows = [b - b.mean(0, keepdim=True) for b in self.categorical]
        return torch.cat([*rows, self.continuous], dim=0)

    def shift(self, design: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """beta_{c,f} = a_c . B_{:,f} for the features ``idx``, (B, f_b)."""
        return design @ self.matrix()[:, idx]

    @torch.no_grad()
    def effects(self, *, centre_features: bool = False) -> CovariateEffects:
        """B split per covariate; ``centre_features`` also centres each row over the features.

        The "nb" likelihood takes a softmax over features, which ignores a constant added to a
        cell's every log-rate: only differences between features are identified there.
        """
        matrix = self.matrix()
        if centre_features:
            matrix = matrix - matrix.mean(1, keepdim=True)
        parts = list(torch.split(matrix, [*self.n_cats, self.n_continuous], dim=0))
        return CovariateEffects(categorical=[p.clone() for p in parts[:-1]], continuous=parts[-1].clone())
