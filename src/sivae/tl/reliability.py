"""How far a centrality ranking can be trusted: the ground truth's own noise, and agreement beyond
what a nuisance score (the detection rate) explains.

The ground-truth centrality is itself estimated from a finite sample of cells. Its split-half
reliability r (Spearman between estimates from two disjoint halves of the cells) bounds what any
method can reach: by the Spearman-Brown formula the full-sample estimate has reliability
2r / (1 + r), and a method that knew the true centrality exactly would correlate with the
estimate at about sqrt(2r / (1 + r)), the noise ceiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import rankdata, spearmanr

from sivae._errors import InputError

from .ground_truth import centrality_ground_truth

Estimator = Callable[..., pd.Series]


def noise_ceiling(reliability: float) -> float:
    """sqrt(2r / (1 + r)): the Spearman a perfect method reaches against a truth of split-half reliability r.

    Parameters
    ----------
    reliability
        Split-half correlation r of the truth's estimate, in [0, 1] (a negative r gives 0).

    Returns
    -------
    float
        The ceiling, in [0, 1].
    """
    r = float(reliability)
    if not np.isfinite(r) or r > 1:
        raise InputError(f"reliability must be a finite correlation <= 1; got {reliability!r}")
    r = max(r, 0.0)
    return float(np.sqrt(2 * r / (1 + r)))


def split_half_reliability(
    adata: AnnData,
    *,
    estimator: Estimator | None = None,
    seed: int = 0,
    between_seeds: bool = True,
    **kwargs: Any,
) -> dict[str, float]:
    """Split-half and between-seed reliability of a per-gene estimate such as the ground truth.

    The cells are split at random (seeded) into two halves; the estimate is made on each half and
    the two rankings compared (Spearman). With ``between_seeds`` the estimate is also made twice
    on all the cells with seeds ``seed`` and ``seed + 1`` (the estimator's own randomness).

    Parameters
    ----------
    adata
        Cells x genes, as the estimator reads it; not modified (the estimates run on copies).
    estimator
        ``f(adata, seed=..., **kwargs) -> pandas.Series`` per gene; default
        ``sivae.tl.centrality_ground_truth``.
    seed
        Seed of the split (and of the estimator).
    between_seeds
        Also compare two seeds on all cells (twice the cost of one full estimate).
    **kwargs
        Passed to the estimator.

    Returns
    -------
    dict
        ``split_half`` (r), ``ceiling`` (`noise_ceiling` of r), ``between_seeds`` (Spearman of the
        two seeds, when asked), ``n_genes`` (genes with a finite estimate in both halves).
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"split_half_reliability expects an AnnData; got {type(adata).__name__}")
    if adata.n_obs < 20:
        raise InputError(f"split_half_reliability needs at least 20 cells (10 per half); got {adata.n_obs}")
    estimator = centrality_ground_truth if estimator is None else estimator
    order = np.random.default_rng(seed).permutation(adata.n_obs)
    half = adata.n_obs // 2
    first, second = (_estimate(estimator, adata[np.sort(rows)].copy(), seed, kwargs)
                     for rows in (order[:half], order[half:2 * half]))
    r, n = _spearman(first, second)
    out = {"split_half": r, "ceiling": noise_ceiling(r) if np.isfinite(r) else float("nan"), "n_genes": n}
    if between_seeds:
        a, b = (_estimate(estimator, adata.copy(), s, kwargs) for s in (seed, seed + 1))
        out["between_seeds"] = _spearman(a, b)[0]
    return out


def _estimate(estimator: Estimator, adata: AnnData, seed: int, kwargs: dict[str, Any]) -> pd.Series:
    return pd.Series(estimator(adata, seed=seed, **kwargs), index=adata.var_names).astype(float)


def _spearman(a: pd.Series, b: pd.Series) -> tuple[float, int]:
    both = np.isfinite(a.to_numpy()) & np.isfinite(b.to_numpy())
    if both.sum() < 3:
        return float("nan"), int(both.sum())
    return float(spearmanr(a.to_numpy()[both], b.to_numpy()[both]).statistic), int(both.sum())


def partial_spearman(x: Any, y: Any, control: Any) -> float:
    """Spearman of ``x`` and ``y`` once both are cleared of ``control`` (partial correlation of ranks).

    Each of the three is ranked (ties averaged); the ranks of ``x`` and of ``y`` are each
    regressed linearly on the ranks of ``control``, and the result is the Pearson correlation of
    the two residuals. Against a ground-truth centrality with ``control`` the detection rate, it
    measures what a method knows about the network beyond how often a gene is seen.

    Parameters
    ----------
    x, y, control
        Equal-length 1-D sequences (Series are aligned on their index when all three are Series);
        positions where any is NaN are left out.

    Returns
    -------
    float
        In [-1, 1]; NaN when fewer than 4 positions remain or a residual is constant.
    """
    if all(isinstance(v, pd.Series) for v in (x, y, control)):
        frame = pd.concat([x, y, control], axis=1, join="inner")
        x, y, control = (frame.iloc[:, i] for i in range(3))
    values = [np.asarray(v, dtype=np.float64).ravel() for v in (x, y, control)]
    if len({v.size for v in values}) != 1:
        raise InputError(f"x, y and control must have equal lengths; got {[v.size for v in values]}")
    keep = np.logical_and.reduce([np.isfinite(v) for v in values])
    if keep.sum() < 4:
        return float("nan")
    rx, ry, rc = (rankdata(v[keep]) for v in values)
    design = np.column_stack([np.ones_like(rc), rc])
    residuals = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rx, ry)]
    norms = [np.linalg.norm(r) for r in residuals]
    if min(norms) < 1e-9 * len(rc):
        return float("nan")
    return float(residuals[0] @ residuals[1] / (norms[0] * norms[1]))
