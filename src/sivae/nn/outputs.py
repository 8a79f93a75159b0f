"""What the generative modules hand back: the loss terms, and cells or features encoded once."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Losses:
    """Terms of the negative ELBO, each an unbiased minibatch estimate of the full objective / C."""

    recon: torch.Tensor
    kl_cells: torch.Tensor
    kl_features: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    interpretability: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    @property
    def total(self) -> torch.Tensor:
        return self.recon + self.kl_cells + self.kl_features + self.interpretability

    def as_floats(self) -> dict[str, float]:
        terms = ("recon", "kl_cells", "kl_features", "interpretability")
        out = {name: float(getattr(self, name).detach()) for name in terms}
        out["total"] = float(self.total.detach())
        return out


@dataclass
class EncodedCells:
    """A batch of cells through the cell-wise networks once, to score against any feature block."""

    mean_z: torch.Tensor  # (B, K) posterior means of z_{c,1}
    z_L: torch.Tensor  # (B, H) z_{c,L} of a sample of z_{c,1}; of its mean in the feature step
    kl: torch.Tensor  # (B,) KL(q(z_c) || p(z_c))
    covariates: torch.Tensor | None = None  # (B, D) a_c, None for a model without covariates


@dataclass
class EncodedFeatures:
    """A block of features through the feature-wise networks once, to score against any cells."""

    mean_v: torch.Tensor  # (f_b, K) posterior means of v_{f,1}
    v_L: torch.Tensor  # (f_b, H) v_{f,L} of a sample of v_{f,1}
    kl: torch.Tensor  # (f_b,) KL(q(v_f) || p(v_f))
