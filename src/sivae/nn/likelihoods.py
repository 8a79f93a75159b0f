"""Negative log-likelihoods of the observation models, elementwise so callers choose the sums."""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, var), elementwise (paper eq. 8)."""
    return 0.5 * (_LOG_2PI + torch.log(var) + (x - mean).pow(2) / var)


def negative_binomial_nll(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """-log NB(x; mean mu, inverse dispersion theta), elementwise.

    The Gamma-Poisson mixture of paper eq. 16-17 integrated over m_cf, written in the mean /
    inverse-dispersion form scvi-tools uses, so the variance is mu + mu^2 / theta.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    log_prob = (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )
    return -log_prob
