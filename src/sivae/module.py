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

from .nn.likelihoods import gaussian_nll, negative_binomial_nll_per_cell
from .nn.mlp import GaussianEncoder, decoder, kl_standard_normal, reparameterize
from .settings import Interval, setting

LIKELIHOODS = ("gaussian", "nb")
VARIANCES = ("cell", "feature")
_MIN_VARIANCE = 1e-4


@dataclass(frozen=True)
class ModuleConfig:
    """Architecture of a cell-wise VAE and, for siVAE, of its feature-wise twin.

    The settings a user chooses are declared here, once (sivae.settings), and config.ModelConfig
    takes them over by name; ``n_features`` and ``n_feature_input`` follow from the data.
    """

    n_features: int
    n_latent: int = setting(2, "K, the size of both embeddings", range=Interval(1))
    encoder_hidden: tuple[int, ...] = setting(
        (1024, 512, 128), "hidden widths of the encoders (the paper's genomic default 1024-512-128)",
        range=Interval(1), non_empty=True, cli="--hidden")
    decoder_hidden: tuple[int, ...] = (128, 512, 1024)
    likelihood: str = setting("gaussian", "gaussian on scaled data, or nb on raw counts in "
                                          "adata.layers['counts'] (siVAE-NB, eq. 14-18)", choices=LIKELIHOODS)
    # "cell": one variance per cell, sigma_d(z_cL) as in eq. 8 (parameters do not grow with F);
    # "feature": one learned variance per feature.
    variance: str = setting("cell", "cell: one variance per cell from z_cL (eq. 8); feature: one per feature",
                            choices=VARIANCES)
    # Linear decoders: the mean is v_{f,1} . z_{c,1} directly (siVAE-linear, eq. 19; LDVAE).
    linear: bool = setting(False, "siVAE-linear (eq. 19-20): linear decoders, mean v_f1 . z_c1")
    gamma: float = setting(0.05, "weight of the interpretability term (eq. 13); 0 gives the paper's "
                                 "siVAE without it", range=Interval(0))
    # Width C_red of the feature-wise encoder's input; 0 for a model without the feature path.
    n_feature_input: int = 0


@dataclass
class Batch:
    """One minibatch: a block of cells x features, plus what the loss needs to stay unbiased."""

    x: torch.Tensor | None  # (B, F) encoder input, scaled; None where ``statistics`` stand in
    target: torch.Tensor | None  # (B, f_b) likelihood target: scaled values, or counts for "nb"
    feature_idx: torch.Tensor  # (f_b,) which features this block scores
    feature_x: torch.Tensor | None  # (f_b, C_red) feature-wise encoder input
    n_cells: int  # training cells in the full data set
    n_features: int  # features in the full data set
    library: torch.Tensor | None = None  # (B,) total counts per cell, "nb" only
    # (2, nnz) cell and feature of every nonzero count in target, "nb" only; None: found from target
    target_nonzero: torch.Tensor | None = None
    # siVAE's step 2 over all training cells at once (the trainer's fast path): cells then None
    statistics: CellStatistics | None = None


@dataclass
class CellStatistics:
    """Sums over cells of all that siVAE's step 2 reads from them.

    In step 2 the cell-wise networks are fixed and both of its terms are quadratic in the
    feature-wise outputs: the regression (z_{c,L} . (v_{f,L} - w_f))^2 sums to
    d_f^T (sum_c z_{c,L} z_{c,L}^T) d_f, and the interpretability term (X_cf - z_c . v_f)^2 to
    sum_c X_cf^2 - 2 v_f . (sum_c z_c X_cf) + v_f^T (sum_c z_c z_c^T) v_f. One pass over the
    cells gathers these sums; the step then trains on features alone, with exactly the
    objective that minibatches of cells estimate.
    """

    n: float  # cells summed
    gram_L: torch.Tensor  # (H, H) sum of z_{c,L} z_{c,L}^T at the posterior means
    gram_z: torch.Tensor  # (K, K) sum of z_c z_c^T (posterior means)
    zx: torch.Tensor  # (K, F) sum of z_c X_c^T
    x2: torch.Tensor  # (F,) sum of X_cf^2

    def __add__(self, other: CellStatistics) -> CellStatistics:
        return CellStatistics(self.n + other.n, self.gram_L + other.gram_L, self.gram_z + other.gram_z,
                              self.zx + other.zx, self.x2 + other.x2)

    def as_tensors(self) -> list[torch.Tensor]:
        return [self.gram_L, self.gram_z, self.zx, self.x2]


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


@dataclass
class EncodedFeatures:
    """A block of features through the feature-wise networks once, to score against any cells."""

    mean_v: torch.Tensor  # (f_b, K) posterior means of v_{f,1}
    v_L: torch.Tensor  # (f_b, H) v_{f,L} of a sample of v_{f,1}
    kl: torch.Tensor  # (f_b,) KL(q(v_f) || p(v_f))


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
        """-log p(target | z_L, v_L) summed over the block's features, (B,)."""
        idx = batch.feature_idx
        mean = self.observation_mean(z_L, v_L, idx)
        if self.config.likelihood == "nb":
            # eq. 15-17: softmax over all features, scaled by the observed library size.
            mu = batch.library[:, None] * torch.softmax(mean, dim=-1)
            return negative_binomial_nll_per_cell(batch.target, mu, self.log_theta[idx].exp(),
                                                  batch.target_nonzero)
        if self.config.variance == "cell":
            var = F_.softplus(self.variance_head(z_L)) + _MIN_VARIANCE  # (B, 1)
        else:
            var = self.log_var[idx].exp() + _MIN_VARIANCE  # (f_b,)
        return gaussian_nll(batch.target, mean, var).sum(1)

    def encode_cells(self, x: torch.Tensor, phase: str = "cell") -> EncodedCells:
        """Encode, sample, decode (eq. 1-2): what every feature block of these cells shares."""
        mean_z, log_var_z = self.encoder(x)
        z_L = self.decoder(reparameterize(mean_z, log_var_z))  # (B, H)
        return EncodedCells(mean_z=mean_z, z_L=z_L, kl=kl_standard_normal(mean_z, log_var_z))

    def encode_features(self, feature_x: torch.Tensor | None, phase: str = "cell") -> None:
        """A VAE has no feature-wise networks: its v_f are free weights, read in ``score``."""
        return None

    def score(self, batch: Batch, cells: EncodedCells, features: EncodedFeatures | None = None,
              phase: str = "cell", *, v_L: torch.Tensor | None = None) -> Losses:
        """The loss of ``batch``'s block given its cells already encoded (``loss`` = encode + score)."""
        if v_L is None:
            v_L = self.weight[batch.feature_idx]
        scale = batch.n_features / len(batch.feature_idx)  # features in the block -> all features
        return Losses(recon=scale * self.nll(cells.z_L, v_L, batch).mean(), kl_cells=cells.kl.mean())

    def loss(self, batch: Batch, phase: str = "cell") -> Losses:
        return self.score(batch, self.encode_cells(batch.x), phase=phase)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The parameters that map a cell to its embedding (the encoder's)."""
        return list(self.encoder.parameters())

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
    def generate(
        self, n_cells: int, v_L: torch.Tensor, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draw cells from the generative model: z ~ N(0, I), X ~ p(X | z).

        Scaled values for the gaussian likelihood; counts for "nb", whose cells need their total
        counts ``library`` (n_cells,). The features are those whose v_{f,L} is given.
        """
        z_L = self.decoder(torch.randn(n_cells, self.config.n_latent, device=v_L.device))
        idx = torch.arange(v_L.shape[0], device=v_L.device)
        mean = self.observation_mean(z_L, v_L, idx)
        if self.config.likelihood == "nb":
            if library is None or library.shape != (n_cells,):
                raise ValueError(f"the nb likelihood needs library sizes of shape ({n_cells},)")
            # eq. 15-17: rho = softmax(mean), m ~ Gamma(theta, theta / mu), x ~ Poisson(m)
            mu = library[:, None].to(mean) * torch.softmax(mean, dim=-1)
            theta = self.log_theta[idx].exp()
            rate = torch.distributions.Gamma(theta, theta / mu.clamp_min(1e-8)).sample()
            return torch.poisson(rate)
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

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The parameters that map a cell to its embedding (the cell-wise encoder's)."""
        return self.cell.embedding_parameters()

    def loss(self, batch: Batch, phase: str = "joint") -> Losses:
        if phase == "cell":
            return self.cell.loss(batch)
        features = self.encode_features(batch.feature_x, phase)
        if phase == "feature":  # step 1's fixed cells enter only through their sums
            statistics = batch.statistics if batch.statistics is not None else self.cell_statistics(batch.x)
            return self._feature_step(batch, statistics, features)
        return self.score(batch, self.encode_cells(batch.x, phase), features, phase)

    statistics_phases = ("feature",)  # steps whose loss reads cells only through cell_statistics

    @torch.no_grad()
    def cell_statistics(self, x: torch.Tensor) -> CellStatistics:
        """The sums step 2 needs over the cells ``x`` (B, F), in float64 (see CellStatistics)."""
        mean_z = self.cell.encoder(x)[0]
        z_L = self.cell.decoder(mean_z).double()
        mean_z, x = mean_z.double(), x.double()
        return CellStatistics(n=float(x.shape[0]), gram_L=z_L.T @ z_L, gram_z=mean_z.T @ mean_z,
                              zx=mean_z.T @ x, x2=x.pow(2).sum(0))

    def encode_cells(self, x: torch.Tensor, phase: str = "joint") -> EncodedCells:
        """The cell-wise half once per batch; in step 2 at the posterior means, with no noise."""
        if phase != "feature":
            return self.cell.encode_cells(x)
        mean_z, log_var_z = self.cell.encoder(x)
        return EncodedCells(mean_z=mean_z, z_L=self.cell.decoder(mean_z),
                            kl=kl_standard_normal(mean_z, log_var_z))

    def encode_features(self, feature_x: torch.Tensor | None, phase: str = "joint") -> EncodedFeatures | None:
        """Encode, sample, decode a block of features (eq. 10-12); None in step 1, which has free v_{f,L}."""
        if phase == "cell":
            return None
        mean_v, log_var_v = self.feature_encoder(feature_x)
        v_L = self.feature_decoder(reparameterize(mean_v, log_var_v))  # (f_b, H)
        return EncodedFeatures(mean_v=mean_v, v_L=v_L, kl=kl_standard_normal(mean_v, log_var_v))

    def score(self, batch: Batch, cells: EncodedCells, features: EncodedFeatures | None = None,
              phase: str = "joint") -> Losses:
        """The loss of ``batch``'s block given its cells and features already encoded.

        ``loss`` is encode + score; held-out evaluation encodes each batch of cells once and
        scores every feature block against it (train.Trainer.evaluate). Step 2 ("feature") is
        scored from cell statistics instead (``loss``).
        """
        if phase == "cell":
            return self.cell.score(batch, cells)
        if phase == "feature":
            raise ValueError("step 2 reads cells through cell_statistics: use loss()")
        scale = batch.n_features / len(batch.feature_idx)  # features in the block -> all features
        losses = self.cell.score(batch, cells, v_L=features.v_L)
        losses.kl_features = scale * features.kl.sum() / batch.n_cells
        losses.interpretability = self._interpretability(batch, cells.mean_z, features.mean_v, scale)
        return losses

    def _interpretability(
        self, batch: Batch, mean_z: torch.Tensor, mean_v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Eq. 13 on the latent means: v_{f,1} . z_{c,1} should approximate X_cf on its own."""
        if self.config.gamma == 0 or self.config.linear:
            return torch.zeros((), device=mean_v.device)
        x_block = batch.x[:, batch.feature_idx]  # (B, f_b)
        residual = x_block - mean_z @ mean_v.T
        return self.config.gamma * scale * 0.5 * residual.pow(2).sum(1).mean()

    def _feature_step(self, batch: Batch, cells: CellStatistics, features: EncodedFeatures) -> Losses:
        """Step 2: the feature-wise VAE learns to stand in for step 1's free v_{f,L}.

        The regression is measured where v_{f,L} acts, on the means it gives the cells,
        (z_{c,L} . v_{f,L} - z_{c,L} . v_free)^2 with z_{c,L} at step 1's posterior means, not
        on the raw vectors: z_{c,L} spans few of the H directions, and the free vectors' other
        directions keep their random initial values, which no network can predict and which do
        not affect the model. The interpretability term (eq. 13) is applied here too, against
        step 1's fixed embedding, so the loadings start joint training where the term wants them.
        Both are means over the cells summed in ``cells``, scaled like the joint objective so
        the steps' losses compare.
        """
        idx = batch.feature_idx
        scale = batch.n_features / len(idx)
        dtype = features.v_L.dtype
        diff = features.v_L - self.cell.weight[idx].detach()  # (f_b, H)
        gram_L = cells.gram_L.to(dtype) / cells.n
        recon = scale * 0.5 * ((diff @ gram_L) * diff).sum()
        losses = Losses(recon=recon, kl_cells=torch.zeros((), device=recon.device))
        losses.kl_features = scale * features.kl.sum() / batch.n_cells
        if self.config.gamma > 0 and not self.config.linear:
            m = features.mean_v  # (f_b, K)
            squares = (cells.x2[idx] - 2 * (m.double() * cells.zx[:, idx].T).sum(1)).to(dtype) / cells.n
            quadratic = ((m @ (cells.gram_z.to(dtype) / cells.n)) * m).sum(1)
            losses.interpretability = self.config.gamma * scale * 0.5 * (squares + quadratic).sum()
        return losses

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
    def generate(
        self, n_cells: int, v_L: torch.Tensor, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.cell.generate(n_cells, v_L, library)
