"""What a fitted model computes over chosen cells: the public surface that ``sivae.tl`` builds on.

`BaseModel` (model.py) mixes this in. The tools (hub bootstrap, attributions, sampling) read
cells, decoded features and reconstructions through these methods only, so a model's internals
can change without touching them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from anndata import AnnData

from .._constants import KEYS
from .._errors import InputError
from ..data.backed import BackedCellMatrix
from ..data.loaders import CellMatrix, cells_on_features
from ..nn.likelihoods import negative_binomial_expected_log1p
from .accuracy import CENTRALITY_SUMS, centrality_terms
from .covariates import covariate_rows

CHUNK = 1024  # cells per forward pass when embedding or scoring


class ScoringMixin:
    """Reading, encoding and reconstructing chosen cells with a model (mixed into `BaseModel`).

    Uses the model's ``module``, ``device``, ``config``, ``feature_names``, ``feature_x``,
    ``adata``, ``cells`` and ``train_idx``, and ``cell_covariates`` (covariates.CovariatesMixin).
    """

    def require_data(self, what: str) -> None:
        """Refuse ``what`` on a model loaded without its training data.

        Parameters
        ----------
        what
            The call that needs the data, as the sentence names it (e.g. "centrality_ci() without cells").

        Raises
        ------
        InputError
            When the model was loaded without its AnnData (``load(path)`` rather than ``load(path, adata)``).
        """
        if self.adata is None:
            raise InputError(f"{what} needs the training data, but this model was loaded without it; "
                             "load it with its AnnData: load(path, adata)")

    def cell_source(self, adata: AnnData | None = None) -> CellMatrix | BackedCellMatrix:
        """Rows of ``adata`` as the model reads them: scaled values on the model's features.

        Parameters
        ----------
        adata
            The model's own AnnData (None or ``model.adata``: the cells it trained on, in memory
            or on disk), or other cells measured on its features (any order; other features
            ignored), preprocessed like the training cells. Reads ``adata.X``.

        Returns
        -------
        CellMatrix or BackedCellMatrix
            ``.rows(indices)`` gives a (len(indices), F) float32 tensor on the CPU.
        """
        if adata is None:
            self.require_data("reading the training cells")
            return self.cells
        return self.cells if adata is self.adata else cells_on_features(adata, self.feature_names)

    def cell_chunks(self, cells: CellMatrix | BackedCellMatrix,
                    rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """The cells ``rows`` of ``cells`` (from `cell_source`) in chunks of `CHUNK` cells.

        Yields
        ------
        (numpy.ndarray, torch.Tensor)
            The chunk's row indices and their scaled values on the model's device, (b, F).
        """
        for s in range(0, len(rows), CHUNK):
            chunk = rows[s : s + CHUNK]
            yield chunk, cells.rows(chunk).to(self.device)

    @torch.no_grad()
    def decoded_features(self) -> torch.Tensor:
        """v_{f,L} of every feature at the posterior means (paper eq. 8's read-out), (F, H).

        Returns
        -------
        torch.Tensor
            On the model's device; for a model without a feature path (VAE, LDVAE), its free
            per-feature parameters.
        """
        self.module.eval()
        idx = torch.arange(len(self.feature_names), device=self.device)
        fx = None if self.feature_x is None else self.feature_x.to(self.device)
        return self.module.feature_decoded(fx, idx)

    def _scored_cells(self, adata: AnnData | None, rows: np.ndarray | None
                      ) -> tuple[CellMatrix | BackedCellMatrix, np.ndarray, CellMatrix | None]:
        # (scaled cells, the rows to score, raw counts for "nb") of the training data or of adata
        nb = self.config.likelihood == "nb"
        if adata is None:
            self.require_data("scoring the training cells")
            counts = CellMatrix(self.adata.layers[KEYS.COUNTS]) if nb else None
            return self.cells, self.train_idx if rows is None else rows, counts
        cells = cells_on_features(adata, self.feature_names)
        counts = CellMatrix(adata[:, self.feature_names].layers[KEYS.COUNTS]) if nb else None
        return cells, np.arange(adata.n_obs) if rows is None else rows, counts

    @torch.no_grad()
    def reconstructions(self, adata: AnnData | None = None, *,
                        rows: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The cells and their reconstructions at the posterior means, chunk by chunk.

        Parameters
        ----------
        adata
            Cells on the model's features, preprocessed like the training data; reads
            ``adata.X``, for "nb" ``adata.layers["counts"]``, and a model's covariate columns of
            ``adata.obs`` (`cell_covariates`). None: the model's training data.
        rows
            Which cells: row indices of ``adata``; None: all of its cells, or the training cells
            (``model.train_idx``) of the model's own data.

        Yields
        ------
        (torch.Tensor, torch.Tensor)
            Truth and reconstruction, (b, F) each, on the model's device, in the space the
            centrality is measured in: scaled values; for "nb" models log1p(TP10K) and its
            expected value under the model's NB (`negative_binomial_expected_log1p`), not the log
            of the expected count, which overshoots sparse genes (Jensen's inequality): on pbmc3k
            the NB centrality's Spearman with the ground truth was 0.29 with the log of the
            expected count and 0.83 with this, both by 1 - MSE / variance; 0.87 by the
            correlation, the default (benchmarks/hubs.py, rows "siVAE NB", 3 seeds).
        """
        cells, rows, counts = self._scored_cells(adata, rows)
        covariates = self.cell_covariates(adata)  # each cell reconstructed with its own batch
        self.module.eval()
        v_L = self.decoded_features()
        idx = torch.arange(v_L.shape[0], device=self.device)
        theta = None if counts is None else self.module.inverse_dispersion().detach()
        for chunk, x in self.cell_chunks(cells, rows):
            pred = self.module.predict(x, v_L, idx, **covariate_rows(covariates, chunk, self.device))
            if counts is None:
                yield x, pred
            else:  # "nb": in log1p(TP10K) space, the cell's value against what the model expects it to be
                raw = counts.rows(chunk).to(self.device)
                library = raw.sum(1, keepdim=True).clamp_min(1.0)
                scale = 1e4 / library
                yield torch.log1p(raw * scale), negative_binomial_expected_log1p(pred * library, theta, scale)

    def reconstruction_sums(self, adata: AnnData | None = None, *, rows: np.ndarray | None = None) -> torch.Tensor:
        """Per feature, over the chosen cells, the sums `sivae.models.accuracy.accuracy_from_sums`
        turns into the centrality: of the truth t, t^2, the reconstruction p, p^2 and t p.

        Parameters
        ----------
        adata, rows
            The cells, as in `reconstructions`.

        Returns
        -------
        torch.Tensor
            float64 on the CPU, (5, F), in the order of `sivae.models.accuracy.CENTRALITY_SUMS`.
        """
        sums = torch.zeros(len(CENTRALITY_SUMS), len(self.feature_names), dtype=torch.float64)
        for truth, pred in self.reconstructions(adata, rows=rows):
            sums += centrality_terms(truth, pred).sum(0).cpu()
        return sums
