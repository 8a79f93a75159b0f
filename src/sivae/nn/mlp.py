"""Fully connected building blocks shared by the cell-wise and feature-wise networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], *, last_activation: bool = True) -> nn.Sequential:
    """A stack of Linear + ReLU layers through ``sizes`` (input width first).

    With ``last_activation=False`` the last layer is linear, as in the authors' decoders, so the
    decoder's last hidden layer z_{c,L} can take any sign.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """x -> hidden layers -> q(latent) = N(mean, diag(exp(log_var))) (paper eq. 10-11)."""

    def __init__(self, n_input: int, hidden: Sequence[int], n_latent: int) -> None:
        super().__init__()
        self.body = mlp([n_input, *hidden])
        width = hidden[-1] if hidden else n_input
        self.mean = nn.Linear(width, n_latent)
        self.log_var = nn.Linear(width, n_latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        # Clamped so that an early exploding step cannot produce exp() overflow.
        return self.mean(h), self.log_var(h).clamp(-12.0, 8.0)


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """One sample of N(mean, exp(log_var)) that gradients flow through."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)


def kl_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over the last dimension."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


def decoder(n_latent: int, hidden: Sequence[int]) -> nn.Module:
    """Latent -> hidden layers, the last one linear; the identity for a linear model."""
    if not hidden:
        return nn.Identity()
    return mlp([n_latent, *hidden], last_activation=False)
