"""Neural-network feature attributions on a trained model's decoder or encoder (paper, Fig. 3).

``attribute(model, adata, method=...)`` returns per-cell attributions S[c, f, d] (cells x features x
latent dimensions), computed lazily, one chunk of cells at a time, so 10,000 cells x 20,000
features x K=32 are never one dense tensor; ``summarize_attributions`` streams them into F x K
loadings comparable with siVAE's (paper, Methods "Feature embeddings for feature attribution
methods and Gene Relevance").

How each method is computed, and why:

- saliency, grad_x_input: the Jacobian by ``torch.func`` (``vmap`` over cells of ``jacrev``, or of
  ``jacfwd`` in forward mode). One batched call gives every output node of every cell; captum
  would need one backward pass per output node, the slow path the paper measured.
- integrated_gradients: the same batched Jacobian at the Gauss-Legendre points of the path from
  the baseline to the input (captum's default rule), weighted and multiplied by (x - baseline);
  the Jacobian is taken forward or reverse, whichever has fewer passes (inputs vs outputs).
  Hand-written for the same reason: captum's IG takes one output node per call.
- deeplift: captum's ``DeepLift`` (the rescale rule needs hooks on every ReLU, which captum does
  well); all output nodes in one call by repeating each cell once per output node with its own
  target index.
- shapley: captum's ``ShapleyValueSampling``: with ``target=None`` it returns every output node
  from the same sampled permutations, so one call covers all of them.

The decoders of SIVAE and VAE end in a linear read-out, mean X_cf = z_{c,L} . v_{f,L} + b_f
(eq. 8). All five methods are linear in the network's output (chain rule through a linear map;
additivity of IG and of Shapley values, exact for the same sampled permutations), so the
attribution of feature f is v_{f,L} . A_c, where A_c (H x K) attributes the last hidden layer.
We attribute H output nodes instead of F, and the summary works on A_c and v_L directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from ._inputs import check_model_input

METHODS = ("saliency", "grad_x_input", "deeplift", "integrated_gradients", "shapley")
FORWARD_METHODS = ("saliency", "grad_x_input")
TARGETS = ("decoder", "encoder")
MODES = ("reverse", "forward")
_CHUNK_ELEMENTS = 2**22  # floats in one chunk's attribution tensor (16 MiB in float32)


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_options(method: str, target: str, mode: str) -> None:
    """Refuse an unknown method, target or mode, and forward mode for a method without one."""
    _check_choice(method, "method", METHODS)
    _check_choice(target, "target", TARGETS)
    _check_choice(mode, "mode", MODES)
    if mode == "forward" and method not in FORWARD_METHODS:
        raise InputError(f"{method} has no forward mode (only {' and '.join(FORWARD_METHODS)} do); "
                         "use mode='reverse'")


# -- the methods on any torch module (inputs (B, n_in) -> outputs (B, n_out)) ----------------------
def _jacobian(fn: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    # (B, n_out, n_in): vmap over cells of the per-cell Jacobian
    jac = torch.func.jacfwd if mode == "forward" else torch.func.jacrev
    return torch.func.vmap(jac(fn))(x)


def _integrated_gradients(fn: nn.Module, x: torch.Tensor, base: torch.Tensor, n_steps: int) -> torch.Tensor:
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas, weights = (nodes + 1) / 2, weights / 2  # Gauss-Legendre on [0, 1], as captum's default
    with torch.no_grad():
        n_out = fn(x[:1]).shape[-1]
    # the same Jacobian either way: take the cheaper direction (K inputs < H outputs on a decoder)
    mode = "forward" if x.shape[1] < n_out else "reverse"
    total = None
    for alpha, w in zip(alphas, weights):  # one batched Jacobian per step bounds memory
        jac = _jacobian(fn, base + float(alpha) * (x - base), mode)
        total = jac * float(w) if total is None else total + jac * float(w)
    return total * (x - base)[:, None, :]


def _deeplift(fn: nn.Module, x: torch.Tensor, base: torch.Tensor, n_out: int) -> torch.Tensor:
    from captum.attr import DeepLift

    b = x.shape[0]
    repeated = x.repeat_interleave(n_out, 0)  # (B * n_out, n_in): one row per (cell, output node)
    target = torch.arange(n_out, device=x.device).repeat(b)
    attr = DeepLift(fn).attribute(repeated, baselines=base.expand_as(x).repeat_interleave(n_out, 0), target=target)
    return attr.reshape(b, n_out, -1).detach()


def _shapley(fn: nn.Module, x: torch.Tensor, base: torch.Tensor, n_samples: int, seed: int) -> torch.Tensor:
    from captum.attr import ShapleyValueSampling

    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seeded permutations, global RNG untouched
        torch.manual_seed(seed)
        attr = ShapleyValueSampling(fn).attribute(
            x, baselines=base.expand_as(x), target=None, n_samples=n_samples,
            perturbations_per_eval=max(1, min(x.shape[1], 64)),
        )
    return attr.detach()  # (B, n_out, n_in)


def attribute_module(
    fn: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    mode: str = "reverse",
    baseline: float | torch.Tensor = 0.0,
    n_steps: int = 50,
    n_samples: int = 25,
    seed: int = 0,
) -> torch.Tensor:
    """Attributions of every output node of ``fn`` to every input, for each row of ``x``.

    Parameters
    ----------
    fn
        A torch module mapping (B, n_in) to (B, n_out) and one row (n_in,) to (n_out,); its
        non-linearities must be ``nn.ReLU`` modules for DeepLIFT's rescale rule.
    x
        Inputs, (B, n_in).
    method
        saliency (the signed gradient; DeepExplain and captum report its absolute value, which
        loses the direction the summary needs), grad_x_input, deeplift (rescale rule),
        integrated_gradients or shapley (permutation sampling).
    mode
        "reverse" or "forward" (saliency and grad_x_input only); the results agree.
    baseline
        Reference input of deeplift, integrated_gradients and shapley: a number, (n_in,), or
        (B, n_in), one per row of ``x``.
    n_steps, n_samples, seed
        Gauss-Legendre points of integrated gradients; permutations of Shapley sampling and their
        seed.

    Returns
    -------
    torch.Tensor
        (B, n_out, n_in), detached.
    """
    check_options(method, "decoder", mode)
    fn.eval()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    base = base.expand(x.shape) if base.dim() == 2 else base.expand(x.shape[1:])
    if method in FORWARD_METHODS:
        jac = _jacobian(fn, x, mode).detach()
        return jac if method == "saliency" else jac * x[:, None, :]
    if method == "integrated_gradients":
        return _integrated_gradients(fn, x, base, n_steps).detach()
    if method == "deeplift":
        with torch.no_grad():
            n_out = fn(x[:1]).shape[-1]
        return _deeplift(fn, x, base, n_out)
    return _shapley(fn, x, base, n_samples, seed)


# -- per-cell attributions of a model, lazily --------------------------------------------------------
class CellwiseAttributions:
    """Per-cell attributions S[c, f, d] (cells x features x dims), produced chunk by chunk.

    Subclasses implement ``_chunk(rows)``; ``readout`` (F x H), when set, means each chunk is
    also available as factors A (b, H, K) with S = readout @ A, which the summary uses exactly.
    """

    readout: torch.Tensor | None = None
    default_key: str = KEYS.ATTRIBUTION  # where summarize_attributions writes by default

    def __init__(self, adata: AnnData, cells: np.ndarray, feature_names: np.ndarray, n_dims: int,
                 batch_size: int, description: str) -> None:
        self.adata, self.cells, self.feature_names = adata, cells, feature_names
        self.n_dims, self.batch_size, self.description = n_dims, batch_size, description

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.cells), len(self.feature_names), self.n_dims

    def __repr__(self) -> str:
        c, f, k = self.shape
        return f"{type(self).__name__}({self.description}: {c} cells x {f} features x {k} dims)"

    def _row_chunks(self) -> Iterator[np.ndarray]:
        for s in range(0, len(self.cells), self.batch_size):
            yield self.cells[s : s + self.batch_size]

    def _chunk(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _factors(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """How these attributions were made, for ``uns[key]`` beside their summary (empty: nothing to record)."""
        return {}

    def chunks(self) -> Iterator[torch.Tensor]:
        """Attributions of ``batch_size`` cells at a time, (b, F, K), in the order of ``cells``."""
        for rows in self._row_chunks():
            yield self._chunk(rows)

    def factor_chunks(self) -> Iterator[torch.Tensor]:
        """A (b, H, K) per chunk, with S = readout @ A; only where ``readout`` is set."""
        for rows in self._row_chunks():
            yield self._factors(rows)

    def to_numpy(self, max_bytes: int = 2**30) -> np.ndarray:
        """All attributions as one (cells, F, K) float32 array; refused above ``max_bytes``."""
        c, f, k = self.shape
        if c * f * k * 4 > max_bytes:
            raise InputError(f"{c} cells x {f} features x {k} dims need {c * f * k * 4 / 2**30:.1f} GiB; "
                             "summarise them with sivae.tl.summarize_attributions, which streams")
        return np.concatenate([chunk.cpu().numpy() for chunk in self.chunks()]) if c else np.zeros((0, f, k), np.float32)


class _EncoderMean(nn.Module):
    # the encoder's posterior mean alone: the output nodes of the encoder target
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, covariates)[0]


class _WithCovariates(nn.Module):
    # a network that also reads each cell's covariates a_c, as one input [inputs, a_c]: the methods
    # see one matrix, and the covariates, equal to their baseline, get no attribution of their own
    def __init__(self, network: nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.network, self.n_inputs = network, n_inputs

    def forward(self, x_a: torch.Tensor) -> torch.Tensor:
        return self.network(x_a[..., : self.n_inputs], x_a[..., self.n_inputs :])


class Attributions(CellwiseAttributions):
    """Attributions of one method on a trained model's decoder or encoder; see :func:`attribute`."""

    def __init__(self, model: Any, adata: AnnData, cells: np.ndarray, *, method: str, target: str,
                 mode: str, baseline: float, batch_size: int | None, options: dict[str, int]) -> None:
        cell = model.module.cell if hasattr(model.module, "cell") else model.module
        self.method, self.target, self.mode, self.baseline = method, target, mode, baseline
        self._options = options
        self._model = model
        self._source = model.cell_source(adata)
        n_features, k = len(model.feature_names), model.config.n_latent
        # the decoder reads each cell's covariates, the encoder under encode_covariates: held at the cell's own
        reads = cell.covariates is not None and (target == "decoder" or model.config.encode_covariates)
        self._covariates, self._cell = (model.cell_covariates(adata) if reads else None), cell
        if target == "decoder":
            self._fn = cell.decoder
            self.readout = model.decoded_features().float()  # v_{f,L}, (F, H)
            n_out = self.readout.shape[1]
        else:
            self._fn = _EncoderMean(cell.encoder)
            n_out = k
        self._n_inputs = k if target == "decoder" else n_features
        if reads:
            self._fn = _WithCovariates(self._fn, self._n_inputs)
        if batch_size is None:  # floats per cell: the result, and what the method holds at once
            widths = sum(m.in_features + m.out_features for m in self._fn.modules() if isinstance(m, nn.Linear))
            n_in = k if target == "decoder" else n_features
            passes = {"deeplift": 2 * n_out, "shapley": 64, "integrated_gradients": min(n_in, n_out)}
            held = widths * passes.get(method, n_in if mode == "forward" else n_out)
            batch_size = int(np.clip(_CHUNK_ELEMENTS // max(n_features * k + held, 1), 1, 512))
        super().__init__(adata, cells, np.asarray(model.feature_names), k, batch_size,
                         f"{method} on the {target} ({mode} mode)")
        self.default_key = attribution_key(method, target)

    def provenance(self) -> dict[str, Any]:
        """Method, target, mode, number of cells, seed and baseline, as `attribute` was called."""
        return {"method": self.method, "target": self.target, "mode": self.mode, "n_cells": len(self.cells),
                "seed": self._options["seed"], "baseline": self.baseline}

    def _inputs(self, rows: np.ndarray) -> tuple[torch.Tensor, float | np.ndarray | torch.Tensor]:
        # the inputs attributed and their baseline; with covariates [inputs, a_c] and [baseline, a_c]
        device = self._model.device
        x = self._source.rows(rows).to(device)  # (b, F) scaled
        covs = {} if self._covariates is None else self._covariates.rows(rows, device)
        if self.target == "decoder":
            self._model.module.eval()
            x = self._model.module.cell_embedding(x, **covs)  # posterior means of z_{c,1}, (b, K)
        if self._covariates is None:
            return x, self.baseline
        design = self._cell.design(covs["cat_covs"], covs["cont_covs"]).to(x.dtype)  # (b, D)
        base = torch.as_tensor(self.baseline, dtype=x.dtype, device=device).expand(x.shape)
        return torch.cat([x, design], 1), torch.cat([base, design], 1)

    def _factors(self, rows: np.ndarray) -> torch.Tensor:
        inputs, baseline = self._inputs(rows)
        attr = attribute_module(self._fn, inputs, method=self.method, mode=self.mode,
                                baseline=baseline, **self._options)[..., : self._n_inputs]
        return attr if self.target == "decoder" else attr.transpose(1, 2)

    def _chunk(self, rows: np.ndarray) -> torch.Tensor:
        attr = self._factors(rows)
        if self.readout is None:
            return attr  # encoder: (b, F, K)
        return torch.einsum("fh,bhk->bfk", self.readout, attr)  # eq. 8's read-out, (b, F, K)


def attribution_key(method: str, target: str = "decoder") -> str:
    """Where `summarize_attributions` keeps a summary by default: ``varm["sivae_attribution_<method>"]``
    (+ "_encoder"), and how it was made in ``uns`` under the same key."""
    return f"{KEYS.ATTRIBUTION}_{method}" + ("_encoder" if target == "encoder" else "")


def _check_model(model: Any, target: str) -> None:
    from sivae.models.model import BaseModel

    if not isinstance(model, BaseModel):
        raise InputError(f"expected a trained sivae SIVAE, VAE or LDVAE; got {type(model).__name__}")
    if not getattr(model, "is_trained", False):
        raise InputError("the model is untrained; call model.train() or load a trained model with sivae.load_model")
    cell = model.module.cell if hasattr(model.module, "cell") else model.module
    if target == "decoder" and isinstance(cell.decoder, nn.Identity):
        raise InputError(
            f"this {type(model).__name__} has no hidden decoder layers, so its decoder attribution is "
            "known without computing it: saliency is the loading matrix (model.get_loadings()) and "
            "grad x input, DeepLIFT, integrated gradients and Shapley values are loadings x z; use "
            "those, or target='encoder'"
        )


def _check_baseline(baseline: Any, model: Any, target: str) -> float | np.ndarray:
    # a number, or one value per input (K latent dims on the decoder, F features on the encoder),
    # finite in the model's dtype: 1e300 is finite in float64 and infinite in float32
    n_in = model.config.n_latent if target == "decoder" else len(model.feature_names)
    dtype = next(model.module.parameters()).dtype
    try:
        value = np.asarray(baseline, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"baseline must be a number or {n_in} numbers; got {type(baseline).__name__}") from None
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != n_in):
        raise InputError(f"baseline must be a number or one value per input of the {target} ({n_in}); "
                         f"got shape {value.shape}")
    limit = torch.finfo(dtype).max
    if not (np.isfinite(value).all() and (np.abs(value) <= limit).all()):
        raise InputError(f"baseline must be finite in the model's {str(dtype).replace('torch.', '')} "
                         f"(|value| <= {limit:.3g}); got {baseline!r}")
    return float(value) if value.ndim == 0 else value


def _sample_cells(n_obs: int, n_cells: int | None, seed: int) -> np.ndarray:
    if n_cells is None:
        return np.arange(n_obs)
    if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 1:
        raise InputError(f"n_cells must be a positive integer or None (all cells); got {n_cells!r}")
    if n_cells > n_obs:
        raise InputError(f"n_cells={n_cells} is more than the {n_obs} cells in adata; "
                         "pass at most that many, or None for all")
    return np.sort(np.random.default_rng(seed).choice(n_obs, n_cells, replace=False))


def attribute(
    model: Any,
    adata: AnnData,
    *,
    method: str,
    target: str = "decoder",
    mode: str = "reverse",
    n_cells: int | None = None,
    seed: int = 0,
    baseline: float = 0.0,
    batch_size: int | None = None,
    n_steps: int = 50,
    n_samples: int = 25,
) -> Attributions:
    """Feature attributions of a trained SIVAE, VAE or LDVAE, per cell, computed lazily.

    Nothing is computed here: iterate ``.chunks()``, call ``.to_numpy()`` (small cases) or pass the
    result to :func:`summarize_attributions` (streams). Each pass recomputes.

    Parameters
    ----------
    model
        A trained ``SIVAE``, ``VAE`` or ``LDVAE`` (``LDVAE`` and linear models: encoder only,
        their decoder's attribution is the loading matrix itself).
    adata
        Cells to attribute, on the model's features, preprocessed like the training data (the
        model's own ``model.adata`` or new cells). Reads ``adata.X``.
    method
        "saliency", "grad_x_input", "deeplift", "integrated_gradients" or "shapley".
    target
        "decoder": inputs are the K latent dims (at the posterior means), outputs the F features
        (for "nb" models, the logits before the softmax of eq. 15). "encoder": inputs are the F
        scaled features, outputs the K posterior means.
    mode
        "reverse", or "forward" for saliency and grad_x_input. Forward costs grow with the inputs
        (K on the decoder, F on the encoder), reverse with the outputs (H on the decoder thanks to
        the linear read-out, K on the encoder).
    n_cells
        Attribute a seeded uniform sample of this many cells; None: all cells.
    seed
        Seed of the cell sample and of Shapley sampling.
    baseline
        Reference input of deeplift, integrated_gradients and shapley, in the scaled space: 0 is
        the mean cell on the encoder and the prior mean on the decoder.
    batch_size
        Cells per chunk; None picks one that keeps a chunk near 16 MiB.
    n_steps, n_samples
        Integration points of integrated gradients; permutations of Shapley sampling.

    Returns
    -------
    Attributions
        Per-cell S[c, f, d] (c in ``.cells``, rows of ``adata``), chunk by chunk. Writes
        nothing: :func:`summarize_attributions` writes the summary to
        ``varm["sivae_attribution_<method>"]`` and this call's parameters to ``uns`` beside it.

    Notes
    -----
    Memory per chunk of b cells: the (b, F, K) result, plus for the decoder the (b, H, K)
    attribution of the last hidden layer; integrated gradients adds one Jacobian, deeplift
    repeats the b cells once per output node (b x H rows on the decoder, b x K on the encoder)
    and shapley runs up to 64 perturbed copies of the b cells at once.
    """
    check_options(method, target, mode)
    _check_model(model, target)
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    seed, batch_size = _params.seed(seed), _params.optional_count(batch_size, "batch_size")
    n_steps, n_samples = _params.count(n_steps, "n_steps"), _params.count(n_samples, "n_samples")
    if method == "integrated_gradients":  # Gauss-Legendre nodes: eigenvalues of an n x n matrix
        _params.check_memory(4 * 8.0 * n_steps**2, f"integrated gradients with n_steps={n_steps:,}",
                             "use fewer steps (50 is captum's default)")
    baseline = _check_baseline(baseline, model, target)
    check_model_input(model, adata, "attribute")
    cells = _sample_cells(adata.n_obs, n_cells, seed)
    return Attributions(model, adata, cells, method=method, target=target, mode=mode,
                        baseline=baseline, batch_size=batch_size,
                        options={"n_steps": n_steps, "n_samples": n_samples, "seed": seed})

# -- summary: per-cell attributions -> F x K loadings ---------------------------------------------
