"""The paper's summary of per-cell attributions into a features x K loading matrix (Methods,
"Feature embeddings for feature attribution methods"), streamed over cells so that no dense
cells x features x K tensor is ever held."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from sivae import _params
from sivae._errors import InputError

from .attribution import CellwiseAttributions


def summarize_attributions(
    attr: CellwiseAttributions,
    *,
    reference: str | np.ndarray | None = None,
    center: bool = True,
    sketch_rank: int = 64,
    seed: int = 0,
    key_added: str | None = None,
    inplace: bool = True,
) -> np.ndarray:
    """Summarise per-cell attributions into F x K loadings, as the paper's Methods do.

    For each latent dimension d, the cells x features matrix S[:, :, d] is reduced by PCA to its
    first principal component's loadings u_d (length F); U = [u_1 ... u_K] is comparable with
    siVAE's loadings V. Streams over cells: nothing cells x features x K is held at once.

    Parameters
    ----------
    attr
        From :func:`attribute` or :func:`sivae.tl.gene_relevance`.
    reference
        F x K loadings (an array, or a key of ``attr.adata.varm`` such as "sivae_loadings") to
        align signs with: a principal component's sign is arbitrary, so u_d is flipped to
        correlate positively with the reference's column d. None: with the mean attribution.
    center
        Centre each S[:, :, d] over cells, as PCA does (the paper). ``False`` takes the first
        singular vector instead, which keeps an attribution that is the same in every cell
        (saliency of a linear network), where centred PCA sees only noise.
    sketch_rank
        Width r of the random sketch used when there is no linear read-out and F > r.
    seed
        Seed of the sketch.
    key_added, inplace
        Where U is written (the rule of ``sivae.tl``): ``attr.adata.varm[key_added]``; None:
        ``"sivae_attribution_<method>"`` (+ ``"_encoder"``) for :func:`attribute`'s,
        ``"sivae_gene_relevance"`` for Gene Relevance. With :func:`attribute`'s, how they were
        made (method, target, mode, n_cells, seed, baseline, seconds) goes to
        ``attr.adata.uns[key_added]``. ``inplace=False``: write nothing, only return U (for
        attributions of an AnnData that holds other features than the model's).

    Returns
    -------
    numpy.ndarray
        U, F x K float32, unit-norm columns.

    Notes
    -----
    Memory. Decoder of SIVAE or VAE (attributions S_c = v_L A_c with A_c of H x K): exact, from
    A itself while cells <= H (n x n eigenproblems), else from K x H x H second moments of A,
    plus a QR of v_L (F x H), in float64: at most 8 (K H^2 + 2 F H) bytes, e.g. 270 MiB at
    K=32, H=1024, F=20,000. Encoder and Gene Relevance: exact when F <= r (the
    K x F x F covariances); otherwise a one-pass Nystrom sketch of each covariance,
    C_d Omega with Omega F x r Gaussian, of 8 K F r bytes (330 MiB at K=32, F=20,000, r=64),
    accurate when the first component stands out of the rest of the spectrum. Plus one chunk.
    """
    if not isinstance(attr, CellwiseAttributions):
        raise InputError(f"expected attributions from sivae.tl.attribute or gene_relevance; got {type(attr).__name__}")
    n, n_features, k = attr.shape
    if n < 2:
        raise InputError(f"a principal component needs at least 2 cells; the attributions hold {n}")
    sketch_rank, seed = _params.count(sketch_rank, "sketch_rank"), _params.seed(seed)
    if inplace and (attr.adata.n_vars != n_features
                    or not np.array_equal(np.asarray(attr.adata.var_names), attr.feature_names)):
        raise InputError("writing the summary needs the attributed AnnData to hold exactly the model's "
                         "features, in order; subset it to them, or pass inplace=False")
    t0 = time.perf_counter()
    ref = _reference(attr, reference)
    if attr.readout is not None:
        U, mean = _summary_factored(attr, center)
    else:
        U, mean = _summary_sketched(attr, center, int(sketch_rank), seed)
    empty = np.flatnonzero((U.norm(dim=0) < 0.5).cpu().numpy())  # a unit vector, unless S had no spread
    if len(empty):
        raise InputError(f"the attributions along dimension {empty[0] + 1} are the same in all {n} cells, so they "
                         "have no principal component; attribute more cells, or summarise with center=False")
    U = _align_signs(U, mean if ref is None else torch.as_tensor(ref, dtype=U.dtype, device=U.device))
    out = U.float().cpu().numpy()
    if inplace:
        key = attr.default_key if key_added is None else key_added
        attr.adata.varm[key] = out
        provenance = attr.provenance()
        if provenance:
            attr.adata.uns[key] = {**provenance, "seconds": time.perf_counter() - t0}
    return out


def _reference(attr: CellwiseAttributions, reference: str | np.ndarray | None) -> np.ndarray | None:
    if reference is None:
        return None
    _, n_features, k = attr.shape
    if isinstance(reference, str):
        if reference not in attr.adata.varm:
            raise InputError(f"adata.varm has no {reference!r}; pass an F x K array or one of {list(attr.adata.varm)}")
        reference = attr.adata.varm[reference]
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (n_features, k) or not np.isfinite(ref).all():
        raise InputError(f"reference must be a finite {n_features} x {k} matrix; got shape {ref.shape}")
    return ref


def _missing_ok(attr: CellwiseAttributions) -> bool:
    # Gene Relevance marks partials it cannot estimate with NaN (they count as 0 in the summary);
    # a network's attributions have no such gaps: a NaN there is an overflow to report
    return bool(getattr(attr, "nan_means_missing", False))


def _finite(A: torch.Tensor, missing_ok: bool) -> torch.Tensor:
    if missing_ok:
        A = torch.where(A.isnan(), torch.zeros_like(A), A)
    if not torch.isfinite(A).all():
        raise InputError(f"{int((~torch.isfinite(A)).sum())} attributions are NaN or infinite (the network "
                         "overflowed at these inputs or baseline); use a baseline and inputs on the scale of "
                         "the model's data")
    return A


def _moments(chunks: Iterator[torch.Tensor], block: int = 256, *,
             missing_ok: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of A and of A A^T per dimension, (K, H) and (K, H, H), in float64.

    Chunks are pooled into blocks of ``block`` cells so that each update is one batched GEMM of
    rank ``block`` rather than many small outer products that stream K H^2 values each.
    """
    sum_a = sum_aa = None
    pooled: list[torch.Tensor] = []

    def flush() -> None:
        nonlocal sum_a, sum_aa
        A = _finite(torch.cat(pooled).double(), missing_ok)  # (b, H, K)
        At = A.permute(2, 1, 0)  # (K, H, b)
        if sum_aa is None:
            sum_a, sum_aa = A.sum(0).T, At @ At.transpose(1, 2)
        else:
            sum_a += A.sum(0).T
            sum_aa.baddbmm_(At, At.transpose(1, 2))
        pooled.clear()

    for A in chunks:  # (b, H, K)
        pooled.append(A)
        if sum(a.shape[0] for a in pooled) >= block:
            flush()
    if pooled:
        flush()
    return sum_a, sum_aa


def _summary_factored(attr: CellwiseAttributions, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # S_d = A_d V^T with V = QR, so S_d's top right singular vector is Q w, with w that of A_d R^T
    V = attr.readout.double()  # (F, H)
    n, H = attr.shape[0], V.shape[1]
    Q, R = torch.linalg.qr(V)  # (F, r), (r, H)
    if n <= H:  # keep A (n H K floats, no more than the moments): n x n problems, not r x r
        missing_ok = _missing_ok(attr)
        A = torch.cat([_finite(a.double(), missing_ok) for a in attr.factor_chunks()]).permute(2, 0, 1)  # (K, n, H)
        mean_a = A.mean(1)  # (K, H)
        B = (A - mean_a[:, None, :] if center else A) @ R.T  # (K, n, r)
        top = torch.linalg.eigh(B @ B.transpose(1, 2))[1][:, :, -1:]  # (K, n, 1)
        w = (B.transpose(1, 2) @ top)[..., 0]  # (K, r)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return Q @ w.T, V @ mean_a.T  # (F, K) each
    sum_a, sum_aa = _moments(attr.factor_chunks(), missing_ok=_missing_ok(attr))
    mean_a = sum_a / n
    cov = sum_aa - n * mean_a[:, :, None] * mean_a[:, None, :] if center else sum_aa
    _, vecs = torch.linalg.eigh(R @ cov @ R.T)  # (K, r, r), ascending
    return Q @ vecs[:, :, -1].T, V @ mean_a.T  # (F, K) each


def _summary_sketched(attr: CellwiseAttributions, center: bool, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_features = attr.shape[1]
    exact = n_features <= rank
    omega = sum_s = Y = None
    n = 0
    for S in attr.chunks():  # (b, F, K)
        S = _finite(S.double(), _missing_ok(attr))
        if omega is None:
            gen = torch.Generator().manual_seed(seed)
            omega = (torch.eye(n_features, dtype=S.dtype) if exact
                     else torch.randn(n_features, rank, generator=gen, dtype=S.dtype)).to(S.device)
            sum_s = torch.zeros(n_features, S.shape[2], dtype=S.dtype, device=S.device)
            Y = torch.zeros(S.shape[2], n_features, omega.shape[1], dtype=S.dtype, device=S.device)
        sum_s += S.sum(0)
        Y += torch.einsum("bfk,bkr->kfr", S, torch.einsum("bfk,fr->bkr", S, omega))  # C_d Omega
        n += S.shape[0]
    mean = sum_s / n  # (F, K)
    if center:  # C_d - n mu mu^T, applied to Omega
        Y -= n * mean.T[:, :, None] * (mean.T @ omega)[:, None, :]
    if exact:
        return torch.linalg.eigh((Y + Y.transpose(1, 2)) / 2)[1][:, :, -1].T, mean
    # Nystrom approximation C ~ Y (Omega^T Y)^-1 Y^T (Tropp et al. 2017), with a tiny shift
    shift = 1e-10 * torch.linalg.matrix_norm(Y)[:, None, None]
    Yv = Y + shift * omega
    B = omega.T @ Yv
    vals, vecs = torch.linalg.eigh((B + B.transpose(1, 2)) / 2)
    inv_sqrt = vecs @ torch.diag_embed(vals.clamp_min(1e-300).rsqrt()) @ vecs.transpose(1, 2)
    left = torch.linalg.svd(Yv @ inv_sqrt, full_matrices=False)[0]  # (K, F, r)
    return left[:, :, 0].T, mean


def _align_signs(U: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # flip each column to agree with the reference; where they are orthogonal, largest entry > 0
    dot = (U * ref).sum(0)
    fallback = U.gather(0, U.abs().argmax(0, keepdim=True))[0]
    sign = torch.where(dot.abs() > 1e-12, dot.sign(), fallback.sign())
    return U * torch.where(sign == 0, torch.ones_like(sign), sign)
