"""The siVAE generative model and its loss, in pure torch (no AnnData, no optimiser).

Symbols follow the paper's Methods: z_{c,1} (cell embedding), z_{c,L} (last hidden layer of the
cell-wise decoder), v_{f,1} (feature embedding), v_{f,L} (last hidden layer of the feature-wise
decoder), gamma (weight of the interpretability term, eq. 13).

Covariates (batches, donors, ...). Cell c may carry J categorical covariates s_{c,j} (the batch
first) and M continuous ones u_c; a_c = [onehot(s_{c,1}), ..., onehot(s_{c,J}), u_c] (length D,
nn.covariates). Eq. 4-8 and 13 become, with B (D x F) the covariates' per-feature effects,
beta_{c,f} = a_c . B_{:,f} = sum_j B^(j)_{s_{c,j},f} + sum_m u_{c,m} B^(u)_{m,f}:

    z_{c,1} ~ N(0, I_K)                                                       (4)
    z_{c,l} = mu_l([z_{c,l-1}, a_c]),  l = 2..L                               (5: every layer reads a_c)
    v_{f,1} ~ N(0, I_K),  v_{f,l} = omega_l(v_{f,l-1})                         (6-7: no covariates)
    X_{c,f} ~ N(v_{f,L} . z_{c,L} + b_f + beta_{c,f}, sigma_d(z_{c,L}))       (8)
    interpretability: -gamma sum_{c,f} log N(X_{c,f}; v_{f,1} . z_{c,1} + beta_{c,f}, 1)   (13)
    q(z_{c,1}) = N(W_phi^T phi(X_{c,:}[, a_c]), ...)                           (11: a_c with encode_covariates)

The feature-wise networks never read a_c (a feature keeps one embedding v_{f,1}); B, not the
loadings V, carries each batch's shift of every feature, so a batch cannot pose as a latent
dimension of the loadings. Each B^(j) is centred over its categories (b_f holds the average).
"nb": rho_{c,:} = softmax_f(v_{f,L} . z_{c,L} + b_f + beta_{c,f}) (eq. 15): the effect enters the
log-rate before the softmax, exp(B^(j)_{s,f}) multiplying feature f's share of the counts in
category s. Linear models (eq. 19, LDVAE): z_{c,L} = z_{c,1}, covariates act through beta alone.
Without covariates (D = 0) all is the paper's, parameters, names and initial values included.

Training steps: 1 ("cell", the cell-wise VAE) trains the encoder, the decoder with its covariate
weights, b_f and B with free v_{f,L}; 2 ("feature") holds the cell side and B fixed: the
regression z_{c,L} . (v_{f,L} - v_free) has no beta (it cancels), and the interpretability term's
target becomes X_{c,f} - beta_{c,f} (CellStatistics keeps the sums this needs); 3 ("joint")
trains everything but the free v_{f,L}, B included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F_

from .covariates import CovariateEffects, Covariates
from .likelihoods import gaussian_nll, negative_binomial_nll_per_cell
from .mlp import GaussianEncoder, decoder, kl_standard_normal, reparameterize
from .outputs import EncodedCells, EncodedFeatures, Losses
from ..settings import Interval, setting

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
    # Covariates (module docstring): categories of each categorical covariate, the batch first;
    # how many continuous ones; whether the cell-wise encoder reads them too. Defaults: none.
    n_cats_per_covariate: tuple[int, ...] = ()
    n_continuous_covariates: int = 0
    encode_covariates: bool = setting(False, "the cell-wise encoder reads the covariates too (eq. 11), "
                                             "as scvi-tools' encode_covariates")

    @property
    def n_covariates(self) -> int:
        """D, the width of a cell's covariate vector a_c (one-hot categories, then values)."""
        return sum(self.n_cats_per_covariate) + self.n_continuous_covariates


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
    # covariates, if configured: category codes (B, J) long in n_cats_per_covariate's order; values (B, M)
    cat_covs: torch.Tensor | None = None
    cont_covs: torch.Tensor | None = None


@dataclass
class CellStatistics:
    """Sums over cells of all that siVAE's step 2 reads from them.

    In step 2 the cell-wise networks are fixed and both of its terms are quadratic in the
    feature-wise outputs: the regression (z_{c,L} . (v_{f,L} - w_f))^2 sums to
    d_f^T (sum_c z_{c,L} z_{c,L}^T) d_f, and the interpretability term (X_cf - z_c . v_f)^2 to
    sum_c X_cf^2 - 2 v_f . (sum_c z_c X_cf) + v_f^T (sum_c z_c z_c^T) v_f. One pass over the
    cells gathers these sums; the step then trains on features alone, with exactly the
    objective that minibatches of cells estimate.

    With covariates the residual X_cf - z_c . v_f - a_c . B_f also needs sum_c a_c X_cf,
    sum_c z_c a_c^T and sum_c a_c a_c^T: sums free of B, so they hold whatever B is.
    """

    n: float  # cells summed
    gram_L: torch.Tensor  # (H, H) sum of z_{c,L} z_{c,L}^T at the posterior means
    gram_z: torch.Tensor  # (K, K) sum of z_c z_c^T (posterior means)
    zx: torch.Tensor  # (K, F) sum of z_c X_c^T
    x2: torch.Tensor  # (F,) sum of X_cf^2
    ax: torch.Tensor | None = None  # (D, F) sum of a_c X_c^T; None without covariates
    gram_za: torch.Tensor | None = None  # (K, D) sum of z_c a_c^T
    gram_a: torch.Tensor | None = None  # (D, D) sum of a_c a_c^T

    def __add__(self, other: CellStatistics) -> CellStatistics:
        return CellStatistics(self.n + other.n, *(a + b for a, b in zip(self.as_tensors(), other.as_tensors())))

    def as_tensors(self) -> list[torch.Tensor]:
        """The sums in field order (CellStatistics(n, *tensors) rebuilds them)."""
        covariate_sums = [] if self.ax is None else [self.ax, self.gram_za, self.gram_a]
        return [self.gram_L, self.gram_z, self.zx, self.x2, *covariate_sums]


class CellVAE(nn.Module):
    """The classic VAE of eq. 1-3, and siVAE's cell-wise half.

    ``weight`` holds v_f (eq. 3): the VAE's last layer. In siVAE's first training step it stands in
    for the feature-wise decoder's output v_{f,L}, which the second step then learns to regress.
    ``covariates`` holds the covariates' effects B (module docstring), None without covariates.
    """

    phases = ("cell",)

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        n_features, n_latent = config.n_features, config.n_latent
        decoder_hidden = () if config.linear else config.decoder_hidden
        self.width = decoder_hidden[-1] if decoder_hidden else n_latent
        n_cov = config.n_covariates
        self.encoder = GaussianEncoder(n_features, config.encoder_hidden, n_latent,
                                       n_cov if config.encode_covariates else 0)
        self.decoder = decoder(n_latent, decoder_hidden, n_cov)
        self.weight = nn.Parameter(torch.randn(n_features, self.width) * self.width**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_features))
        if config.likelihood == "nb":
            self.log_theta = nn.Parameter(torch.zeros(n_features))  # NB inverse dispersion
        elif config.variance == "cell":
            self.variance_head = nn.Linear(self.width, 1)  # sigma_d(z_cL) of eq. 8
        else:
            self.log_var = nn.Parameter(torch.zeros(n_features))
        # last, zero at start: without covariates, parameters, names and initial values are as before
        self.covariates = (Covariates(config.n_cats_per_covariate, config.n_continuous_covariates, n_features)
                           if n_cov else None)

    def design(self, cat_covs: torch.Tensor | None, cont_covs: torch.Tensor | None) -> torch.Tensor | None:
        """a_c of a batch of cells (B, D); None for a model without covariates."""
        return None if self.covariates is None else self.covariates.design(cat_covs, cont_covs)

    def encode(self, x: torch.Tensor, design: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_{c,1}) (eq. 11): the encoder reads a_c only under ``encode_covariates``."""
        return self.encoder(x, design if self.config.encode_covariates else None)

    def observation_mean(
        self, z_L: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor, design: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v_{f,L} . z_{c,L} + b_f (+ beta_{c,f}) (eq. 8); for "nb" the logits of rho (eq. 15)."""
        mean = z_L @ v_L.T + self.bias[idx]  # (B, f_b)
        if design is not None:
            mean = mean + self.covariates.shift(design, idx)
        return mean

    def nll(self, z_L: torch.Tensor, v_L: torch.Tensor, batch: Batch,
            design: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(target | z_L, v_L, a_c) summed over the block's features, (B,)."""
        idx = batch.feature_idx
        mean = self.observation_mean(z_L, v_L, idx, design)
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

    def encode_cells(self, x: torch.Tensor, phase: str = "cell", *, cat_covs: torch.Tensor | None = None,
                     cont_covs: torch.Tensor | None = None) -> EncodedCells:
        """Encode, sample, decode (eq. 1-2): what every feature block of these cells shares."""
        design = self.design(cat_covs, cont_covs)
        mean_z, log_var_z = self.encode(x, design)
        z_L = self.decoder(reparameterize(mean_z, log_var_z), design)  # (B, H)
        return EncodedCells(mean_z=mean_z, z_L=z_L, kl=kl_standard_normal(mean_z, log_var_z), covariates=design)

    def encode_features(self, feature_x: torch.Tensor | None, phase: str = "cell") -> None:
        """A VAE has no feature-wise networks: its v_f are free weights, read in ``score``."""
        return None

    def score(self, batch: Batch, cells: EncodedCells, features: EncodedFeatures | None = None,
              phase: str = "cell", *, v_L: torch.Tensor | None = None) -> Losses:
        """The loss of ``batch``'s block given its cells already encoded (``loss`` = encode + score)."""
        if v_L is None:
            v_L = self.weight[batch.feature_idx]
        scale = batch.n_features / len(batch.feature_idx)  # features in the block -> all features
        recon = scale * self.nll(cells.z_L, v_L, batch, cells.covariates).mean()
        return Losses(recon=recon, kl_cells=cells.kl.mean())

    def loss(self, batch: Batch, phase: str = "cell") -> Losses:
        cells = self.encode_cells(batch.x, cat_covs=batch.cat_covs, cont_covs=batch.cont_covs)
        return self.score(batch, cells, phase=phase)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The parameters that map a cell to its embedding (the encoder's)."""
        return list(self.encoder.parameters())

    @torch.no_grad()
    def cell_embedding(self, x: torch.Tensor, cat_covs: torch.Tensor | None = None,
                       cont_covs: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means of z_{c,1}, (B, K); the covariates are read under ``encode_covariates`` only."""
        design = self.design(cat_covs, cont_covs) if self.config.encode_covariates else None
        return self.encode(x, design)[0]

    @torch.no_grad()
    def covariate_effects(self) -> CovariateEffects:
        """B per covariate (nn.covariates.CovariateEffects), empty without covariates; "nb" rows centred over F."""
        if self.covariates is None:
            return CovariateEffects(categorical=[], continuous=self.bias.new_zeros(0, self.config.n_features))
        return self.covariates.effects(centre_features=self.config.likelihood == "nb")

    @torch.no_grad()
    def feature_decoded(self, feature_x: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        """v_{f,L} at the posterior mean for features ``idx`` (B_f, H)."""
        return self.weight[idx]

    @torch.no_grad()
    def inverse_dispersion(self) -> torch.Tensor:
        """The NB likelihood's theta per feature, (F,) ("nb" models only)."""
        return self.log_theta.exp()

    def predict(
        self, x: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor, cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstructed mean at the posterior means: scaled values, or rho (eq. 15) for "nb"."""
        design = self.design(cat_covs, cont_covs)
        z_L = self.decoder(self.encode(x, design)[0], design)
        mean = self.observation_mean(z_L, v_L, idx, design)
        return torch.softmax(mean, dim=-1) if self.config.likelihood == "nb" else mean

    @torch.no_grad()
    def generate(
        self, n_cells: int, v_L: torch.Tensor, library: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None, cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw cells from the generative model: z ~ N(0, I), X ~ p(X | z, a_c).

        Scaled values for the gaussian likelihood; counts for "nb", whose cells need their total
        counts ``library`` (n_cells,). The features are those whose v_{f,L} is given. A model
        with covariates draws each cell for the covariates given in ``cat_covs`` (n_cells, J)
        and ``cont_covs`` (n_cells, M), e.g. every cell as if from one batch.
        """
        design = self.design(cat_covs, cont_covs)
        if design is not None and design.shape[0] != n_cells:
            raise ValueError(f"pass covariates for each of the {n_cells} cells to draw, not {design.shape[0]}")
        z_L = self.decoder(torch.randn(n_cells, self.config.n_latent, device=v_L.device), design)
        idx = torch.arange(v_L.shape[0], device=v_L.device)
        mean = self.observation_mean(z_L, v_L, idx, design)
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
        covariates = {"cat_covs": batch.cat_covs, "cont_covs": batch.cont_covs}
        if phase == "feature":  # step 1's fixed cells enter only through their sums
            statistics = batch.statistics or self.cell_statistics(batch.x, **covariates)
            return self._feature_step(batch, statistics, features)
        return self.score(batch, self.encode_cells(batch.x, phase, **covariates), features, phase)

    statistics_phases = ("feature",)  # steps whose loss reads cells only through cell_statistics

    @torch.no_grad()
    def cell_statistics(self, x: Tensor, cat_covs: Tensor | None = None,
                        cont_covs: Tensor | None = None) -> CellStatistics:
        """The sums step 2 needs over the cells ``x`` (B, F), in float64 (see CellStatistics)."""
        design = self.cell.design(cat_covs, cont_covs)
        mean_z = self.cell.encode(x, design)[0]
        z_L = self.cell.decoder(mean_z, design).double()
        mean_z, x = mean_z.double(), x.double()
        sums = CellStatistics(n=float(x.shape[0]), gram_L=z_L.T @ z_L, gram_z=mean_z.T @ mean_z,
                              zx=mean_z.T @ x, x2=x.pow(2).sum(0))
        if design is not None:
            a = design.double()  # (B, D)
            sums.ax, sums.gram_za, sums.gram_a = a.T @ x, mean_z.T @ a, a.T @ a
        return sums

    def encode_cells(self, x: torch.Tensor, phase: str = "joint", *, cat_covs: torch.Tensor | None = None,
                     cont_covs: torch.Tensor | None = None) -> EncodedCells:
        """The cell-wise half once per batch; in step 2 at the posterior means, with no noise."""
        if phase != "feature":
            return self.cell.encode_cells(x, cat_covs=cat_covs, cont_covs=cont_covs)
        design = self.cell.design(cat_covs, cont_covs)
        mean_z, log_var_z = self.cell.encode(x, design)
        return EncodedCells(mean_z=mean_z, z_L=self.cell.decoder(mean_z, design),
                            kl=kl_standard_normal(mean_z, log_var_z), covariates=design)

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
        losses.interpretability = self._interpretability(batch, cells, features.mean_v, scale)
        return losses

    def _interpretability(
        self, batch: Batch, cells: EncodedCells, mean_v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Eq. 13 on the latent means: v_{f,1} . z_{c,1} (+ beta_{c,f}) should approximate X_cf."""
        if self.config.gamma == 0 or self.config.linear:
            return torch.zeros((), device=mean_v.device)
        x_block = batch.x[:, batch.feature_idx]  # (B, f_b)
        residual = x_block - cells.mean_z @ mean_v.T
        if cells.covariates is not None:  # the batch's own shift, kept out of the loadings
            residual = residual - self.cell.covariates.shift(cells.covariates, batch.feature_idx)
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
        the steps' losses compare. The covariates' effects B stay as step 1 left them: the
        regression has none, and they shift the interpretability term's target (CellStatistics).
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
            squares = cells.x2[idx] - 2 * (m.double() * cells.zx[:, idx].T).sum(1)
            quadratic = ((m @ (cells.gram_z.to(dtype) / cells.n)) * m).sum(1)
            if cells.ax is not None:  # - 2 B_f . sum a_c X_cf + B_f^T (sum a a^T) B_f + 2 m^T (sum z a^T) B_f
                effects = self.cell.covariates.matrix()[:, idx].T.detach()  # (f_b, D), fixed in step 2
                b64 = effects.double()
                squares = squares - 2 * (b64 * cells.ax[:, idx].T).sum(1) + ((b64 @ cells.gram_a) * b64).sum(1)
                quadratic = quadratic + 2 * ((m @ (cells.gram_za.to(dtype) / cells.n)) * effects).sum(1)
            squares = squares.to(dtype) / cells.n
            losses.interpretability = self.config.gamma * scale * 0.5 * (squares + quadratic).sum()
        return losses

    @torch.no_grad()
    def cell_embedding(self, x: Tensor, cat_covs: Tensor | None = None, cont_covs: Tensor | None = None) -> Tensor:
        """Posterior means of z_{c,1}, (B, K): the siVAE scores."""
        return self.cell.cell_embedding(x, cat_covs, cont_covs)

    @torch.no_grad()
    def covariate_effects(self) -> CovariateEffects:
        """The covariates' per-feature effects B, kept apart from the loadings (CellVAE.covariate_effects)."""
        return self.cell.covariate_effects()

    @torch.no_grad()
    def feature_embedding(self, feature_x: torch.Tensor) -> torch.Tensor:
        """Posterior means of v_{f,1}, (f_b, K): the siVAE loadings."""
        return self.feature_encoder(feature_x)[0]

    @torch.no_grad()
    def feature_decoded(self, feature_x: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        """v_{f,L} at the posterior mean of v_{f,1}, (f_b, H)."""
        return self.feature_decoder(self.feature_embedding(feature_x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, v_L: torch.Tensor, idx: torch.Tensor, cat_covs: Tensor | None = None,
                cont_covs: Tensor | None = None) -> torch.Tensor:
        return self.cell.predict(x, v_L, idx, cat_covs, cont_covs)

    def inverse_dispersion(self) -> torch.Tensor:
        return self.cell.inverse_dispersion()

    @torch.no_grad()
    def generate(self, n_cells: int, v_L: torch.Tensor, library: Tensor | None = None,
                 cat_covs: Tensor | None = None, cont_covs: Tensor | None = None) -> torch.Tensor:
        return self.cell.generate(n_cells, v_L, library, cat_covs, cont_covs)
