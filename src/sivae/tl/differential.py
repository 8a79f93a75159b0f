"""Differential hubs: genes whose siVAE centrality changes between two groups of cells (treated and
control, disease and healthy), with a bootstrap interval, a permutation p-value and BH FDR.

One trained model serves both groups: every cell is reconstructed once, and each gene's
centrality (the correlation of its reconstruction with the data, `sivae.models.accuracy.accuracy_from_sums`)
is measured within each group's cells. Replicates only reweight or relabel those cells, so nothing is retrained.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import false_discovery_control

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from sivae.models.accuracy import CENTRALITY_SUMS, accuracy_from_sums, centrality_terms

from ._inputs import check_model_input

_N_SUMS = len(CENTRALITY_SUMS)  # per cell and gene: the terms of the centrality
COLUMNS = ("centrality_reference", "centrality_target", "difference", "ci_low", "ci_high", "z", "p_value", "fdr")


def differential_hubs(
    model: Any,
    adata: AnnData | None = None,
    *,
    groupby: str,
    reference: Any,
    target: Any,
    n_boot: int = 200,
    n_perm: int = 1000,
    level: float = 0.95,
    min_cells: int = 50,
    within: str | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Per gene: siVAE centrality in a reference and a target group of cells, and its change.

    The model (one, trained on the cells of both groups) reconstructs every cell once; a gene's
    centrality in a group is the correlation of its reconstruction with its values over that
    group's cells (as ``var["sivae_centrality"]`` is over the training cells): how closely the
    reconstruction follows the gene's variation within the group. ``difference`` is target minus reference: a gene
    whose co-expression with the rest grows in the target group is reconstructed better there. A
    gene whose mean alone shifts between the groups is not differential (a correlation within a
    group does not see how far the model is off that group's mean).

    p-value: a permutation test. The group labels are shuffled across the pooled cells
    ``n_perm`` times and the difference recomputed each time (the cells' reconstructions are
    reused, so a replicate costs one weighted sum); the null is that the two groups' cells are
    exchangeable, and the p-value is the share of permutations whose difference lies at least as
    far from the permutations' mean as the observed one (two-sided, (1 + count) / (1 + n_perm)).
    The permutation distribution is used as it is, not through a normal approximation: for genes
    detected in few cells it is far from normal (on a random split of 400 of Kang's control
    cells, benchmarks/programs.py --quick, the normal approximation once called a gene at FDR <
    0.05 where the permutation p-values called none; with the correlation centrality neither
    does). Its resolution is 1 / (1 + n_perm): with
    the default 1,000, Benjamini-Hochberg over 2,000 genes can call a gene once about 40 genes
    reach that floor; ``z`` (the difference over the permutations' standard deviation) ranks
    genes beyond it. The bootstrap (independent Poisson(1) weights per cell, as `centrality_ci`)
    gives the interval of the difference: where the difference lies, not what chance gives.

    Why one model rather than one per group (benchmarks/programs.py, Kang, all 13,999 cells,
    default architecture): the two designs' per-gene differences agree (Spearman 0.89); one
    model's differences on a random split of the control cells are smaller (median |difference|
    0.022 against 0.027) and it puts more ISGs among the top 100 gains (9 against 7; 12 with
    ``within="cell_type"``), though per-group models put more genes beyond their own split's 99th
    percentile (259 against 62: a per-group design is noisier on the split but moves further on
    the real contrast); and only one model gives p-values and intervals without retraining, in
    about the time of the two per-group fits. On a 4,000-cell run (with the earlier 1 - MSE /
    variance centrality) a model given the condition as its ``batch_key`` did no better
    (differences at Spearman 0.95 with the plain model's; 10 ISGs among the top gains against
    11). Neither design includes the
    variation of training the model again. A difference in the groups' cell-type composition
    also changes within-group variances: pass ``within="cell_type"`` when the groups'
    compositions differ.

    Parameters
    ----------
    model
        A trained model (``sivae.SIVAE``, ``VAE`` or ``LDVAE``).
    adata
        Cells to score, on the model's features and preprocessed like its training data; reads
        ``adata.X`` (and ``layers["counts"]`` for "nb") and ``adata.obs[groupby]``. None: the
        model's own AnnData, all its cells (training and held out).
    groupby
        Column of ``adata.obs`` holding the groups.
    reference, target
        The two groups compared (values of ``obs[groupby]``, matched as text); cells of other
        groups are left out.
    n_boot
        Bootstrap replicates for the interval.
    n_perm
        Label permutations for the null distribution.
    level
        Coverage of the interval.
    min_cells
        Fewest cells each group must have (with ``within``: in a stratum, for it to count).
    within
        Column of ``adata.obs`` with strata, e.g. cell types: the difference is then taken
        within each stratum (both groups' cells of one type) and averaged over the strata, each
        weighted by n_reference * n_target / (n_reference + n_target) of its cells; permutations
        shuffle the group labels within each stratum and the bootstrap resamples within each.
        A change in the groups' composition (more monocytes among stimulated cells) then does
        not read as a change of co-expression. Strata with fewer than ``min_cells`` cells of
        either group are left out (named in a warning); the centrality columns are the same
        weighted averages. None (default): all cells as one stratum.
    seed
        Seed of the permutations and bootstrap weights.
    key_added
        Key of ``adata.uns`` written; None: ``"sivae_differential_hubs"`` (the key rule of
        ``sivae.tl``).

    Returns
    -------
    pandas.DataFrame
        Indexed by the model's features, sorted by ``difference`` (largest gain in the target
        first; NaN last): ``centrality_reference``, ``centrality_target``, ``difference``,
        ``ci_low``, ``ci_high`` (the bootstrap interval), ``z``, ``p_value`` and ``fdr``
        (Benjamini-Hochberg over the genes with a p-value). A gene constant within a group has
        no centrality there (NaN) and no test. Also written, h5ad-safe, to
        ``adata.uns[key_added]`` as ``{"table": DataFrame, "params": dict}`` (or to the model's
        AnnData when ``adata`` is None).
    """
    t0 = time.perf_counter()
    if isinstance(model, AnnData):
        raise InputError("differential_hubs needs the trained model, not an AnnData; pass "
                         "model = sivae.SIVAE(adata).train() or sivae.load_model(folder, adata)")
    if not getattr(model, "is_trained", False):
        raise InputError("differential_hubs needs a trained model; call model.train() first")
    n_boot = _params.integer(n_boot, "n_boot", minimum=2)
    n_perm = _params.integer(n_perm, "n_perm", minimum=20)
    level = _params.fraction(level, "level", closed_high=False)
    min_cells = _params.integer(min_cells, "min_cells", minimum=2)
    seed = _params.seed(seed)
    if adata is None:
        model.require_data("differential_hubs() without cells")
    elif not isinstance(adata, AnnData):
        raise InputError(f"adata must be an AnnData or None; got {type(adata).__name__}")
    cells = model.adata if adata is None else adata
    rows, is_target = _groups(cells, groupby, reference, target, 2 if within is not None else min_cells)
    if adata is not None:
        check_model_input(model, adata, "differential_hubs")
    strata = _strata(cells, within, rows, is_target, min_cells)
    n_genes = len(model.feature_names)
    _params.check_memory(8.0 * (n_perm + 2 * n_boot) * (_N_SUMS * n_genes + 1024) + n_perm * len(rows),
                         f"{n_perm:,} permutations and {n_boot:,} bootstrap replicates",
                         "use fewer replicates (the defaults are 200)")
    rng = np.random.default_rng(seed)
    pooled = _Pooled()
    for name, keep in strata.items():
        sums = _replicate_sums(model, adata, rows[keep], is_target[keep], n_boot, n_perm, rng)
        pooled.add(_differences(sums), weight=float(np.prod(sums["n"]) / sums["n"].sum()))
    table = _table(*pooled.result(), level, pd.Index(model.feature_names))
    used = np.concatenate([rows[keep] for keep in strata.values()])
    in_target = np.concatenate([is_target[keep] for keep in strata.values()])
    params = {"groupby": str(groupby), "reference": str(reference), "target": str(target),
              "n_reference": int((~in_target).sum()), "n_target": int(in_target.sum()), "n_boot": n_boot,
              "n_perm": n_perm, "level": level, "seed": seed, "within": None if within is None else str(within),
              "strata": [str(k) for k in strata] if within is not None else [], "n_cells_scored": len(used),
              "seconds": time.perf_counter() - t0}
    cells.uns[KEYS.DIFFERENTIAL_HUBS if key_added is None else key_added] = {"table": table.copy(), "params": params}
    table.attrs.update(params)
    return table


def _groups(adata: AnnData, groupby: Any, reference: Any, target: Any, min_cells: int) -> tuple[np.ndarray, np.ndarray]:
    # rows of adata in either group (in adata's order) and whether each is in the target group
    if not isinstance(groupby, str) or groupby not in adata.obs.columns:
        raise InputError(f"adata.obs has no {groupby!r} column; pass groupby= one of its columns "
                         f"({', '.join(map(str, adata.obs.columns[:10])) or 'it has none'})")
    labels = adata.obs[groupby]
    text = labels.astype(str).to_numpy()
    text[labels.isna().to_numpy()] = ""  # a missing label is in no group
    if str(reference) == str(target):
        raise InputError(f"reference and target are both {str(target)!r}; pass two different groups of obs[{groupby!r}]")
    present = pd.unique(text[text != ""])
    for group in (reference, target):
        n = int((text == str(group)).sum())
        if n == 0:
            shown = ", ".join(map(str, present[:10]))
            raise InputError(f"group {str(group)!r} is not in adata.obs[{groupby!r}]; its groups are {shown}")
        if n < min_cells:
            raise InputError(f"group {str(group)!r} of adata.obs[{groupby!r}] has {n} cells, fewer than "
                             f"min_cells={min_cells}; pool it with other cells or lower min_cells")
    keep = (text == str(reference)) | (text == str(target))
    rows = np.flatnonzero(keep)
    return rows, text[rows] == str(target)


def _strata(adata: AnnData, within: Any, rows: np.ndarray, is_target: np.ndarray,
            min_cells: int) -> dict[Any, np.ndarray]:
    # stratum -> mask over rows; one stratum of all rows when within is None
    if within is None:
        return {"all": np.ones(len(rows), dtype=bool)}
    if not isinstance(within, str) or within not in adata.obs.columns:
        raise InputError(f"adata.obs has no {within!r} column for within=; pass one of its columns "
                         f"({', '.join(map(str, adata.obs.columns[:10]))}) or within=None")
    labels = adata.obs[within].astype(str).to_numpy()[rows]
    labels[adata.obs[within].isna().to_numpy()[rows]] = ""
    kept, dropped = {}, []
    for name in pd.unique(labels[labels != ""]):
        keep = labels == name
        n_tgt = int((keep & is_target).sum())
        if min(int(keep.sum()) - n_tgt, n_tgt) >= min_cells:
            kept[name] = keep
        else:
            dropped.append(str(name))
    if not kept:
        raise InputError(f"no stratum of obs[{within!r}] has min_cells={min_cells} cells of both groups; lower "
                         "min_cells or pass a coarser within= column")
    if dropped:
        warnings.warn(f"differential_hubs: strata of obs[{within!r}] with fewer than {min_cells} cells of either "
                      f"group are left out: {', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}",
                      UserWarning, stacklevel=3)
    return kept


def _replicate_sums(model: Any, adata: AnnData | None, rows: np.ndarray, is_target: np.ndarray, n_boot: int,
                    n_perm: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    # per gene, the centrality sums (CENTRALITY_SUMS) and cell counts each statistic needs:
    # "observed" (2 groups), "perm" (target sums under each relabelling; reference = total - target),
    # "boot" (2 groups x n_boot Poisson-weighted sums)
    n_genes = len(model.feature_names)
    perm_target = np.stack([rng.permutation(is_target) for _ in range(n_perm)])  # (n_perm, n) bool
    observed, total = np.zeros((2, _N_SUMS, n_genes)), np.zeros((_N_SUMS, n_genes))
    perm, boot = np.zeros((n_perm, _N_SUMS * n_genes)), np.zeros((2, n_boot, _N_SUMS * n_genes))
    boot_n = np.zeros((2, n_boot))
    start = 0
    for truth, pred in model.reconstructions(adata, rows=rows):
        b = truth.shape[0]
        terms = centrality_terms(truth, pred).cpu().numpy()  # (b, 5, F)
        flat = terms.reshape(b, -1)  # (b, 5F)
        target = is_target[start : start + b]
        observed[0] += terms[~target].sum(0)
        observed[1] += terms[target].sum(0)
        total += terms.sum(0)
        perm += perm_target[:, start : start + b].astype(np.float64) @ flat
        weights = rng.poisson(1.0, size=(n_boot, b)).astype(np.float64)  # (n_boot, b)
        for g, in_group in enumerate((~target, target)):
            w = weights * in_group
            boot[g] += w @ flat
            boot_n[g] += w.sum(1)
        start += b
    return {"observed": observed, "total": total, "perm": perm.reshape(n_perm, _N_SUMS, n_genes),
            "boot": boot.reshape(2, n_boot, _N_SUMS, n_genes), "boot_n": boot_n,
            "n": np.array([(~is_target).sum(), is_target.sum()], dtype=np.float64)}


def _accuracy(sums: np.ndarray, n: Any) -> np.ndarray:
    # centrality within a group from (..., 5, F) sums over n cells (n broadcasting against (..., 1)):
    # a correlation over the group's cells, so a model that misses a group's mean (a mean shift:
    # differential expression) does not lower it
    return accuracy_from_sums(sums, n=n)


def _differences(sums: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    # per gene: centrality in the reference and target groups, their difference, and the
    # difference under each permutation (n_perm, F) and bootstrap replicate (n_boot, F)
    n_ref, n_tgt = sums["n"]
    reference = _accuracy(sums["observed"][0], n_ref)
    target = _accuracy(sums["observed"][1], n_tgt)
    perm_diff = _accuracy(sums["perm"], n_tgt) - _accuracy(sums["total"][None] - sums["perm"], n_ref)
    boot_n = np.maximum(sums["boot_n"], 1.0)[..., None]  # a replicate that drew no cell: no NaN
    boot_diff = _accuracy(sums["boot"][1], boot_n[1]) - _accuracy(sums["boot"][0], boot_n[0])
    return reference, target, target - reference, perm_diff, boot_diff


class _Pooled:
    """Weighted averages, per gene, of each stratum's statistics; a stratum where a gene has no
    value (NaN: constant there) does not count for that gene."""

    def __init__(self) -> None:
        self.sums: list[np.ndarray] | None = None
        self.weights: list[np.ndarray] | None = None

    def add(self, arrays: tuple[np.ndarray, ...], weight: float) -> None:
        values = [np.nan_to_num(a, nan=0.0) * weight for a in arrays]
        present = [np.isfinite(a) * weight for a in arrays]
        if self.sums is None:
            self.sums, self.weights = values, present
        else:
            self.sums = [s + v for s, v in zip(self.sums, values)]
            self.weights = [w + p for w, p in zip(self.weights, present)]

    def result(self) -> tuple[np.ndarray, ...]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(np.where(w > 0, s / np.where(w > 0, w, 1.0), np.nan) for s, w in zip(self.sums, self.weights))


def _table(reference: np.ndarray, target: np.ndarray, difference: np.ndarray, perm_diff: np.ndarray,
           boot_diff: np.ndarray, level: float, genes: pd.Index) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: genes constant in a group
        tested = np.isfinite(difference) & (np.isfinite(perm_diff).mean(0) >= 0.5)
        null_mean = np.where(tested, np.nanmean(np.where(tested, perm_diff, 0.0), 0), np.nan)
        null_sd = np.where(tested, np.nanstd(np.where(tested, perm_diff, 0.0), 0, ddof=1), np.nan)
        z = np.where(tested & (null_sd > 0), (difference - null_mean) / null_sd, np.nan)
        # empirical two-sided p: permutations at least as far from their mean (NaN ones count as not)
        beyond = (np.abs(perm_diff - null_mean) >= np.abs(difference - null_mean)).sum(0)
        p = np.where(tested, (1.0 + beyond) / (1.0 + len(perm_diff)), np.nan)
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(boot_diff, [tail, 100 - tail], axis=0) if len(boot_diff) else (np.nan, np.nan)
    fdr = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        fdr[finite] = false_discovery_control(p[finite], method="bh")
    table = pd.DataFrame(dict(zip(COLUMNS, (reference, target, difference, low, high, z, p, fdr))), index=genes)
    table.index.name = "gene"
    return table.sort_values("difference", ascending=False, kind="stable", na_position="last")
