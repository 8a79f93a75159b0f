"""The siVAE generative model and its loss, in pure torch (no AnnData, no optimiser).

Symbols follow the paper's Methods: z_{c,1} (cell embedding), z_{c,L} (last hidden layer of the
cell-wise decoder), v_{f,1} (feature embedding), v_{f,L} (last hidden layer of the feature-wise
decoder), gamma (weight of the interpretability term, eq. 13).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F_

from .nn.likelihoods import gaussian_nll, negative_binomial_nll
from .nn.mlp import GaussianEncoder, decoder, kl_standard_normal, reparameterize

LIKELIHOODS = ("gaussian", "nb")
VARIANCES = ("cell", "feature")
_MIN_VARIANCE = 1e-4


@dataclass(frozen=True)
class ModuleConfig:
    """Architecture of a cell-wise VAE and, for siVAE, of its feature-wise twin."""

    n_features: int
    n_latent: int = 2
    encoder_hidden: tuple[int, ...] = (1024, 512, 128)
    decoder_hidden: tuple[int, ...] = (128, 512, 1024)
    likelihood: str = "gaussian"
    # "cell": one variance per cell, sigma_d(z_cL) as in eq. 8 (parameters do not grow with F);
    # "feature": one learned variance per feature.
    variance: str = "cell"
    # Linear decoders: the mean is v_{f,1} . z_{c,1} directly (siVAE-linear, eq. 19; LDVAE).
    linear: bool = False
    gamma: float = 0.05
    # Width C_red of the feature-wise encoder's input; 0 for a model without the feature path.
    n_feature_input: int = 0


@dataclass
class Batch:
    """One minibatch: a block of cells x features, plus what the loss needs to stay unbiased."""

    x: torch.Tensor | None  # (B, F) encoder input, scaled; None in the feature pre-training step
    target: torch.Tensor | None  # (B, f_b) likelihood target: scaled values, or counts for "nb"
    feature_idx: torch.Tensor  # (f_b,) which features this block scores
    feature_x: torch.Tensor | None  # (f_b, C_red) feature-wise encoder input
    n_cells: int  # training cells in the full data set
    n_features: int  # features in the full data set
    library: torch.Tensor | None = None  # (B,) total counts per cell, "nb" only


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


class CellVAE(nn.Module):
    """The classic VAE of eq. 1-3, and siVAE's cell-wise half.

    ``weight`` holds v_f (eq. 3): the VAE's last layer. In siVAE's first training step it stands in
    for the feature-wise decoder's output v_{f,L}, which the second step then learns to regress.
    """

    phases = ("cell",)

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        n_features, n_latent = config.n_features, config.n_latent
        decoder_hidden = () if config.linear else config.decoder_hidden
        self.width = decoder_hidden[-1] if decoder_hidden else n_latent
        self.encoder = GaussianEncoder(n_features, config.encoder_hidden, n_latent)
        self.decoder = decoder(n_latent, decoder_hidden)
        self.weight = nn.Parameter(torch.randn(n_features, self.width) * self.width**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_features))
        if config.likelihood == "nb":
            self.log_theta = nn.Parameter(torch.zeros(n_features))  # NB inverse dispersion
        elif config.variance == "cell":
            self.variance_head = nn.Linear(self.width, 1)  # sigma_d(z_cL) of eq. 8
        else:
            self.log_var = nn.Parameter(torch.zeros(n_features))

    def observation_mean(self, z_L: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """v_{f,L} . z_{c,L} + b_f (eq. 8); for "nb" the logits of rho (eq. 15)."""
        return z_L @ v_L.T + self.bias[idx]  # (B, f_b)

    def nll(self, z_L: torch.Tensor, v_L: torch.Tensor, batch: Batch) -> torch.Tensor:
        """-log p(target | z_L, v_L), elementwise, (B, f_b)."""
        idx = batch.feature_idx
        mean = self.observation_mean(z_L, v_L, idx)
        if self.config.likelihood == "nb":
            # eq. 15-17: softmax over all features, scaled by the observed library size.
            mu = batch.library[:, None] * torch.softmax(mean, dim=-1)
            return negative_binomial_nll(batch.target, mu, self.log_theta[idx].exp())
        if self.config.variance == "cell":
            var = F_.softplus(self.variance_head(z_L)) + _MIN_VARIANCE  # (B, 1)
        else:
            var = self.log_var[idx].exp() + _MIN_VARIANCE  # (f_b,)
        return gaussian_nll(batch.target, mean, var)

    def cell_terms(self, batch: Batch, v_L: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encode, sample, decode: (mean_z, recon, kl_cells) for a batch, given v_{f,L}."""
        mean_z, log_var_z = self.encoder(batch.x)
        z_L = self.decoder(reparameterize(mean_z, log_var_z))  # (B, H)
        nll = self.nll(z_L, v_L, batch)
        scale = batch.n_features / nll.shape[1]  # features in the block -> all features
        recon = scale * nll.sum(1).mean()
        return mean_z, recon, kl_standard_normal(mean_z, log_var_z).mean()

    def loss(self, batch: Batch, phase: str = "cell") -> Losses:
        _, recon, kl_cells = self.cell_terms(batch, self.weight[batch.feature_idx])
        return Losses(recon=recon, kl_cells=kl_cells)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list(self.parameters())

    @torch.no_grad()
    def cell_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means of z_{c,1}, (B, K)."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def feature_decoded(self, feature_x: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        """v_{f,L} at the posterior mean for features ``idx`` (B_f, H)."""
        return self.weight[idx]

    @torch.no_grad()
    def predict(
        self, x: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        """Reconstructed mean at the posterior means: scaled values, or rho (eq. 15) for "nb"."""
        z_L = self.decoder(self.cell_embedding(x))
        mean = self.observation_mean(z_L, v_L, idx)
        return torch.softmax(mean, dim=-1) if self.config.likelihood == "nb" else mean

    @torch.no_grad()
    def generate(self, n_cells: int, v_L: torch.Tensor) -> torch.Tensor:
        """Draw cells from the generative model: z ~ N(0, I), X ~ p(X | z) (scaled space).

        Gaussian likelihoods only; the features are those whose v_{f,L} is given.
        """
        if self.config.likelihood != "gaussian":
            raise NotImplementedError("generate() supports the gaussian likelihood only")
        z_L = self.decoder(torch.randn(n_cells, self.config.n_latent, device=v_L.device))
        idx = torch.arange(v_L.shape[0], device=v_L.device)
        mean = self.observation_mean(z_L, v_L, idx)
        if self.config.variance == "cell":
            var = F_.softplus(self.variance_head(z_L)) + _MIN_VARIANCE
        else:
            var = self.log_var.exp() + _MIN_VARIANCE
        return mean + torch.randn_like(mean) * var.sqrt()


class SIVAEModule(nn.Module):
    """siVAE (eq. 4-13): a cell-wise and a feature-wise VAE whose decoders meet in X_cf's mean."""

    phases = ("cell", "feature", "joint")

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        if config.n_feature_input < 1:
            raise ValueError("siVAE needs n_feature_input >= 1 (the width C_red of X'_{:,f})")
        self.config = config
        self.cell = CellVAE(config)
        decoder_hidden = () if config.linear else config.decoder_hidden
        self.feature_encoder = GaussianEncoder(
            config.n_feature_input, config.encoder_hidden, config.n_latent
        )
        self.feature_decoder = decoder(config.n_latent, decoder_hidden)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters each training step optimises (paper, "Training procedure for siVAE")."""
        feature_side = [*self.feature_encoder.parameters(), *self.feature_decoder.parameters()]
        if phase == "cell":
            return list(self.cell.parameters())
        if phase == "feature":
            return feature_side
        cell_side = [p for name, p in self.cell.named_parameters() if name != "weight"]
        return cell_side + feature_side

    def loss(self, batch: Batch, phase: str = "joint") -> Losses:
        if phase == "cell":
            return self.cell.loss(batch)
        mean_v, log_var_v = self.feature_encoder(batch.feature_x)
        v_L = self.feature_decoder(reparameterize(mean_v, log_var_v))  # (f_b, H)
        kl_v = kl_standard_normal(mean_v, log_var_v)  # (f_b,)
        scale = batch.n_features / len(batch.feature_idx)  # features in the block -> all features
        if phase == "feature":
            losses = self._regress_free_weights(batch, v_L, kl_v, scale)
            with torch.no_grad():
                mean_z = self.cell.encoder(batch.x)[0]  # step 1's cell embedding, fixed
        else:
            mean_z, recon, kl_cells = self.cell.cell_terms(batch, v_L)
            losses = Losses(
                recon=recon, kl_cells=kl_cells, kl_features=scale * kl_v.sum() / batch.n_cells
            )
        losses.interpretability = self._interpretability(batch, mean_z, mean_v, scale)
        return losses

    def _interpretability(
        self, batch: Batch, mean_z: torch.Tensor, mean_v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Eq. 13 on the latent means: v_{f,1} . z_{c,1} should approximate X_cf on its own.

        Also applied in step 2, against step 1's fixed cell embedding, so the loadings start
        joint training where the term wants them rather than where the regression left them.
        """
        if self.config.gamma == 0 or self.config.linear:
            return torch.zeros((), device=mean_v.device)
        x_block = batch.x[:, batch.feature_idx]  # (B, f_b)
        residual = x_block - mean_z @ mean_v.T
        return self.config.gamma * scale * 0.5 * residual.pow(2).sum(1).mean()

    def _regress_free_weights(
        self, batch: Batch, v_L: torch.Tensor, kl_v: torch.Tensor, scale: float
    ) -> Losses:
        """Step 2: the feature-wise VAE learns to stand in for step 1's free v_{f,L}.

        The regression is measured where v_{f,L} acts, on the means it gives the batch's cells,
        (z_{c,L} . v_{f,L} - z_{c,L} . v_free)^2 with z_{c,L} at the posterior means, not on the
        raw vectors: z_{c,L} spans few of the H directions, and the free vectors' other
        directions keep their random initial values, which no network can predict and which do
        not affect the model. Scaled like the joint objective, so the two steps' losses compare.
        """
        with torch.no_grad():
            z_L = self.cell.decoder(self.cell.encoder(batch.x)[0])  # (B, H)
            target = z_L @ self.cell.weight[batch.feature_idx].T  # (B, f_b)
        residual = z_L @ v_L.T - target
        recon = scale * 0.5 * residual.pow(2).sum(1).mean()
        return Losses(recon=recon, kl_cells=torch.zeros((), device=recon.device),
                      kl_features=scale * kl_v.sum() / batch.n_cells)

    @torch.no_grad()
    def cell_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means of z_{c,1}, (B, K): the siVAE scores."""
        return self.cell.cell_embedding(x)

    @torch.no_grad()
    def feature_embedding(self, feature_x: torch.Tensor) -> torch.Tensor:
        """Posterior means of v_{f,1}, (f_b, K): the siVAE loadings."""
        return self.feature_encoder(feature_x)[0]

    @torch.no_grad()
    def feature_decoded(self, feature_x: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        """v_{f,L} at the posterior mean of v_{f,1}, (f_b, H)."""
        return self.feature_decoder(self.feature_embedding(feature_x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.cell.predict(x, v_L, idx)

    @torch.no_grad()
    def generate(self, n_cells: int, v_L: torch.Tensor) -> torch.Tensor:
        return self.cell.generate(n_cells, v_L)
