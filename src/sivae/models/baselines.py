"""The paper's baselines with siVAE's API: the classic VAE (eq. 1-3) and VAE-linear (LDVAE).

Both are siVAE's cell-wise half alone (module.CellVAE), so a comparison changes one thing: the
feature-wise encoder-decoder and the interpretability term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from .._errors import InputError
from .config import ModelConfig
from .model import BaseModel
from ..nn.module import CellVAE
from .saving import register


def _refuse_fixed(cls: type, kwargs: dict[str, Any], fixed: tuple[str, ...]) -> None:
    given = sorted(set(kwargs) & set(fixed))
    if given:
        raise InputError(f"{cls.__name__} fixes {', '.join(given)} by definition; drop the "
                         "argument, or use sivae.SIVAE for that variant")


@register
class VAE(BaseModel):
    """Classic VAE (paper eq. 1-3) with the same cell-wise architecture and training as SIVAE.

    Writes ``adata.obsm["X_vae"]``, ``adata.var["vae_centrality"]`` and ``adata.uns["vae"]``.
    Takes SIVAE's arguments except those of the feature-wise path.
    """

    _name = "vae"

    def __init__(self, adata: AnnData, *, n_latent: int = ModelConfig.n_latent, likelihood: str = ModelConfig.likelihood,
                 device: str = "auto", **kwargs: Any) -> None:
        _refuse_fixed(VAE, kwargs, ("gamma",))
        super().__init__(adata, n_latent=n_latent, likelihood=likelihood, gamma=0.0, device=device, **kwargs)

    def _build_module(self) -> torch.nn.Module:
        return CellVAE(self._module_config())


@register
class LDVAE(BaseModel):
    """VAE (linear), the paper's LDVAE: negative binomial likelihood, one linear decoder layer.

    Needs raw counts in ``adata.layers["counts"]``. Its loadings are the decoder's weights, F x K,
    written to ``adata.varm["ldvae_loadings"]`` beside ``adata.obsm["X_ldvae"]``.
    """

    _name = "ldvae"

    def __init__(self, adata: AnnData, *, n_latent: int = ModelConfig.n_latent, device: str = "auto",
                 **kwargs: Any) -> None:
        _refuse_fixed(LDVAE, kwargs, ("likelihood", "linear", "gamma"))
        super().__init__(adata, n_latent=n_latent, likelihood="nb", linear=True, gamma=0.0,
                         device=device, **kwargs)

    def _build_module(self) -> torch.nn.Module:
        return CellVAE(self._module_config())

    def get_loadings(self) -> np.ndarray:
        """Decoder weights, F x K (no normalisation layer to fold in)."""
        return self.module.weight.detach().cpu().numpy().copy()
