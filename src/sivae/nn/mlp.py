"""Fully connected building blocks shared by the cell-wise and feature-wise networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear + ReLU layers whose every Linear may also read a cell's covariates a_c.

    As scvi-tools' ``inject_covariates``: the covariate vector (one-hot categories, then
    continuous values) is concatenated to the input of every Linear, so no layer can lose it.
    With ``n_covariates=0`` the layers, their state-dict names ("0.weight", ...) and the forward
    pass are those of a plain ``nn.Sequential``, so models saved without covariates load and
    compute exactly as before.
    """

    def __init__(self, layers: Sequence[nn.Module], n_covariates: int = 0) -> None:
        super().__init__(*layers)
        self.n_covariates = n_covariates

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_covariates and (covariates is None or covariates.shape[-1] != self.n_covariates):
            raise ValueError(f"this network reads {self.n_covariates} covariate columns per cell; "
                             "pass the cells' covariates")
        for layer in self:
            if self.n_covariates and isinstance(layer, nn.Linear):
                x = torch.cat([x, covariates.to(x.dtype)], dim=-1)
            x = layer(x)
        return x


def mlp(sizes: Sequence[int], *, last_activation: bool = True, n_covariates: int = 0) -> MLP:
    """A stack of Linear + ReLU layers through ``sizes`` (input width first).

    With ``last_activation=False`` the last layer is linear, as in the authors' decoders, so the
    decoder's last hidden layer z_{c,L} can take any sign. With ``n_covariates`` > 0 every Linear
    also reads that many covariate columns (``MLP``).
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in + n_covariates, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return MLP(layers, n_covariates)


class GaussianEncoder(nn.Module):
    """x -> hidden layers -> q(latent) = N(mean, diag(exp(log_var))) (paper eq. 10-11).

    With ``n_covariates`` > 0 (the cell-wise encoder under ``encode_covariates``) every hidden
    layer also reads the cell's covariates; without hidden layers the two heads read them.
    """

    def __init__(self, n_input: int, hidden: Sequence[int], n_latent: int, n_covariates: int = 0) -> None:
        super().__init__()
        self.body = mlp([n_input, *hidden], n_covariates=n_covariates)
        # the heads read the covariates only where no hidden layer did
        self._head_covariates = 0 if hidden else n_covariates
        width = (hidden[-1] if hidden else n_input) + self._head_covariates
        self.mean = nn.Linear(width, n_latent)
        self.log_var = nn.Linear(width, n_latent)

    def forward(
        self, x: torch.Tensor, covariates: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x, covariates)
        if self._head_covariates:
            if covariates is None or covariates.shape[-1] != self._head_covariates:
                raise ValueError(f"this encoder reads {self._head_covariates} covariate columns per "
                                 "cell; pass the cells' covariates")
            h = torch.cat([h, covariates.to(h.dtype)], dim=-1)
        # Clamped so that an early exploding step cannot produce exp() overflow.
        return self.mean(h), self.log_var(h).clamp(-12.0, 8.0)


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """One sample of N(mean, exp(log_var)) that gradients flow through."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)


def kl_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over the last dimension."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


class _Identity(nn.Identity):
    # a linear model's decoder: z_{c,L} = z_{c,1}; covariates reach X only through beta
    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        return x


def decoder(n_latent: int, hidden: Sequence[int], n_covariates: int = 0) -> nn.Module:
    """Latent -> hidden layers, the last one linear; the identity for a linear model.

    With ``n_covariates`` > 0 (the cell-wise decoder of a model with covariates) every layer
    also reads the cell's covariates. The identity reads none: a linear model's covariates act
    through their per-feature effects beta alone (module.CellVAE).
    """
    if not hidden:
        return _Identity()
    return mlp([n_latent, *hidden], last_activation=False, n_covariates=n_covariates)
