"""siVAE's centrality: how well a model's reconstruction follows each feature over a set of cells.

Every pass that measures it (training's outputs, `get_reconstruction_accuracy`, the bootstrap of
`tl.centrality_ci`, the permutations of `tl.differential_hubs`, the torchrun reduction) sums the
same five terms per feature over cells; `accuracy_from_sums` is the one place they become a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._errors import InputError


# The sums behind every centrality, per feature over the cells scored, on axis -2 of a float64 array:
# the truth t and the reconstruction p, their squares and their product. Every centrality formula
# (and its bootstraps, permutations and torchrun reduction) is a function of these five sums.
CENTRALITY_SUMS = ("t", "t^2", "p", "p^2", "t p")

# the formulas `accuracy_from_sums` knows; the first is siVAE's centrality
FORMULAS = ("correlation", "r2", "paper")


def centrality_terms(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per cell and feature, the five terms (B, 5, F), float64, whose sums over cells
    `accuracy_from_sums` turns into a centrality (`CENTRALITY_SUMS`)."""
    t, p = truth.double(), pred.double()
    return torch.stack([t, t * t, p, p * p, t * p], 1)


def check_formula(formula: Any) -> None:
    """Refuse a centrality formula `accuracy_from_sums` does not know, in one sentence."""
    if formula not in FORMULAS:
        raise InputError(f"formula must be one of {', '.join(map(repr, FORMULAS))}; got {formula!r}")


def accuracy_from_sums(sums: Any, *, n: Any, formula: str = "correlation") -> np.ndarray:
    """Per feature, how well the reconstruction p follows the truth t, from the sums over n cells
    (`CENTRALITY_SUMS`, on axis -2 of ``sums``: (5, F), or (..., 5, F) for replicates, with
    ``n`` an int or an array broadcasting against (..., F)).

    The one definition of siVAE's centrality (``var["sivae_centrality"]``, ``tl.centrality_ci``,
    ``tl.differential_hubs``):

    - ``"correlation"`` (the default): Pearson's correlation of p with t over the cells, in
      [-1, 1]. It ranks hubs best of the three on every real data set measured
      (``benchmarks/hubs.py``, binned ground truth, 3 seeds): pbmc3k 0.874 against 0.863 for
      "r2", Kang's control PBMCs 0.741 against 0.696, pbmc3k on seurat_v3 genes 0.860 against
      0.853, level on the simulated network (0.906 against 0.907). It leaves out how far the
      reconstruction is off in mean and scale, which says more about the decoder's calibration
      for that gene than about its place in the network.
    - ``"r2"``: 1 - MSE / variance of t, the share of the variance the reconstruction explains
      (the package's centrality before the correlation became the default).
    - ``"paper"``: 1 - Var(t - p) / Var(t), the paper's formula, which forgives a shift in mean.

    A feature (almost) constant on those cells (`_constant_features`) has no variation to
    follow: NaN rather than a division by rounding error. A reconstruction that does not vary
    where the truth does explains none of it: correlation 0.
    """
    s = np.asarray(sums, dtype=np.float64)
    if s.ndim < 2 or s.shape[-2] != len(CENTRALITY_SUMS):
        raise ValueError(f"sums must have the {len(CENTRALITY_SUMS)} centrality sums on axis -2; got shape {s.shape}")
    check_formula(formula)
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    mt, tt, mp, pp, tp = (s[..., i, :] / n for i in range(len(CENTRALITY_SUMS)))
    var_t = tt - mt**2
    constant = _constant_features(var_t, tt)
    safe_var_t = np.where(constant, 1.0, var_t)
    if formula == "correlation":
        var_p = pp - mp**2
        flat = _constant_features(var_p, np.maximum(pp, tt))  # a reconstruction flat up to rounding
        value = np.where(flat, 0.0, (tp - mt * mp) / np.sqrt(safe_var_t * np.where(flat, 1.0, var_p)))
        value = np.clip(value, -1.0, 1.0)  # rounding in the sums, never more
    else:
        mse = np.maximum(tt - 2.0 * tp + pp, 0.0)
        if formula == "paper":
            mse = np.maximum(mse - (mt - mp) ** 2, 0.0)
        value = 1.0 - mse / safe_var_t
    return np.where(constant, np.nan, value)


# A feature whose variance on the cells scored is at most this share of the scale (the larger of
# its own mean square and the median feature's variance) is constant there up to rounding, and
# any accuracy would divide by rounding error (a gene seen in one held-out cell scored -1.4e9
# under 1 - MSE / variance): its accuracy is NaN. A gene seen in one of 800 cells is well above
# the floor.
_VAR_FLOOR = 1e-6


def _constant_features(var: np.ndarray, mean_square: np.ndarray) -> np.ndarray:
    """Features whose variance is below `_VAR_FLOOR` of the scale, per row of (..., F) arrays."""
    positive = np.where(var > 0, var, np.nan)
    scale = np.nan_to_num(np.nanmedian(positive, axis=-1, keepdims=True), nan=0.0) if np.any(var > 0) else 0.0
    return var <= _VAR_FLOOR * np.maximum(mean_square, scale)


def constant_in_sums(sums: np.ndarray, n: Any) -> np.ndarray:
    """The features `accuracy_from_sums` leaves NaN because the truth is constant on the cells."""
    s = np.asarray(sums, dtype=np.float64)
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    mt, tt = s[..., 0, :] / n, s[..., 1, :] / n
    return _constant_features(tt - mt**2, tt)
