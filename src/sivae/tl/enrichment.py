"""Gene-set enrichment of what a model learned: each latent dimension's loadings (both ends, a rank
test), each gene module and the top hubs (over-representation), with Benjamini-Hochberg FDR per
source. Libraries come from `sivae.tl.gene_sets` (GMT, dicts, built-in GO BP), offline.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats
from statsmodels.stats.multitest import multipletests

from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError

from .gene_sets import GeneSetMatch, GeneSets, match_gene_sets, read_gene_sets

__all__ = ["COLUMNS", "enrich", "over_representation", "rank_enrichment"]

COLUMNS = ["source", "term", "statistic", "p", "fdr", "overlap", "set_size", "leading_genes"]
PARTS = ("dimensions", "modules", "hubs")
_N_LEADING = 10  # genes named per row of a rank test
_LOW_MATCH = 0.25  # warn when fewer of the data's genes than this are in any set


def over_representation(query: Sequence[str], gene_sets: GeneSets | GeneSetMatch, *, universe: Sequence[str],
                        source: str = "query", min_size: int = 5, max_size: int = 500) -> pd.DataFrame:
    """Hypergeometric over-representation of each gene set among ``query`` genes.

    Parameters
    ----------
    query
        The genes picked (hubs, a module), in the order ``leading_genes`` should list them.
    gene_sets
        A library (`read_gene_sets` input) or a `match_gene_sets` result on ``universe``.
    universe
        Every gene that could have been picked (usually ``adata.var_names``); sets are matched to
        it case-insensitively and query genes outside it are ignored.
    source
        The ``source`` value of every row.
    min_size, max_size
        Bounds on a set's size within ``universe``.

    Returns
    -------
    pandas.DataFrame
        One row per gene set, smallest p first: ``source``, ``term``, ``statistic`` (fold
        enrichment: overlap over its expectation), ``p`` (one-sided, scipy's hypergeometric
        survival function), ``fdr`` (Benjamini-Hochberg over the rows), ``overlap``,
        ``set_size``, ``leading_genes`` (the overlap, comma-separated, in query order).
    """
    universe = pd.Index(np.asarray(universe, dtype=str))
    match = _matched(gene_sets, universe, min_size, max_size)
    upper = pd.Index(universe.str.upper())
    picked = upper.get_indexer(pd.Index(np.asarray(query, dtype=str)).str.upper())
    picked = pd.unique(picked[picked >= 0])
    if not len(picked):
        raise InputError(f"none of the {len(query)} query genes is among the {len(universe):,} genes of the universe; "
                         "pass genes named as in adata.var_names")
    in_query = np.zeros(len(universe), dtype=bool)
    in_query[picked] = True
    terms = list(match.members)
    size = np.array([len(match.members[t]) for t in terms])
    k = np.array([int(in_query[match.members[t]].sum()) for t in terms])
    m, n = len(universe), len(picked)
    p = stats.hypergeom.sf(k - 1, m, size, n)
    order = {g: r for r, g in enumerate(picked)}
    leading = [",".join(universe[sorted((g for g in match.members[t] if in_query[g]), key=order.get)]) for t in terms]
    return _table(source, terms, k / (size * n / m), p, k, size, leading)


def rank_enrichment(scores: pd.Series, gene_sets: GeneSets | GeneSetMatch, *, source: str = "scores",
                    alternative: str = "greater", min_size: int = 5, max_size: int = 500) -> pd.DataFrame:
    """Rank test of each gene set against the other genes: do its genes score higher (or lower)?

    The Wilcoxon rank-sum (Mann-Whitney U) competitive gene-set test, normal approximation with
    tie and continuity correction, as ``scipy.stats.mannwhitneyu(method="asymptotic")`` computes
    it; written out here so that thousands of sets share one ranking (one sparse product instead
    of a scipy call per set).

    Parameters
    ----------
    scores
        One score per gene (a loading), indexed by gene name.
    gene_sets
        A library (`read_gene_sets` input) or a `match_gene_sets` result on ``scores.index``.
    source
        The ``source`` value of every row.
    alternative
        ``"greater"``: the set sits at the high end; ``"less"``: at the low end.
    min_size, max_size
        Bounds on a set's size among the scored genes.

    Returns
    -------
    pandas.DataFrame
        One row per gene set as `over_representation`'s, with ``statistic`` the probability that a
        set gene lies further toward ``alternative``'s end than a gene outside it (0.5: no shift),
        ``overlap`` = ``set_size`` (genes scored) and ``leading_genes`` its most extreme genes.
    """
    if alternative not in ("greater", "less"):
        raise InputError(f"alternative must be 'greater' or 'less'; got {alternative!r}")
    values = np.asarray(scores, dtype=np.float64)
    names = pd.Index(np.asarray(scores.index, dtype=str))
    match = _matched(gene_sets, names, min_size, max_size)
    terms = list(match.members)
    rows = np.repeat(np.arange(len(terms)), [len(match.members[t]) for t in terms])
    cols = np.concatenate([match.members[t] for t in terms])
    member = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(terms), len(values)))
    ranks = stats.rankdata(values)
    n_all = len(values)
    n1 = np.asarray(member.sum(axis=1)).ravel()
    n2 = n_all - n1
    u1 = member @ ranks - n1 * (n1 + 1) / 2
    _, ties = np.unique(values, return_counts=True)
    tie_term = float((ties**3 - ties).sum()) / (n_all * (n_all - 1))
    sigma = np.sqrt(n1 * n2 / 12 * ((n_all + 1) - tie_term))
    shift = u1 - n1 * n2 / 2
    sign = 1.0 if alternative == "greater" else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (sign * shift - 0.5) / sigma, 0.0)
    p = np.where(n2 > 0, stats.norm.sf(z), 1.0)
    auc = u1 / np.maximum(n1 * n2, 1)
    statistic = auc if alternative == "greater" else 1 - auc
    leading = [",".join(names[idx[np.argsort(-sign * values[idx], kind="stable")[:_N_LEADING]]])
               for idx in (match.members[t] for t in terms)]
    return _table(source, terms, statistic, p, n1.astype(int), n1.astype(int), leading)


def _matched(gene_sets: Any, names: pd.Index, min_size: int, max_size: int) -> GeneSetMatch:
    if isinstance(gene_sets, GeneSetMatch):
        return gene_sets
    return match_gene_sets(gene_sets, names, min_size=min_size, max_size=max_size)


def _table(source: str, terms: list[str], statistic: Any, p: Any, overlap: Any, size: Any,
           leading: list[str]) -> pd.DataFrame:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    fdr = multipletests(p, method="fdr_bh")[1] if len(p) else p
    table = pd.DataFrame({"source": source, "term": terms, "statistic": np.asarray(statistic, dtype=np.float64),
                          "p": p, "fdr": fdr, "overlap": np.asarray(overlap, dtype=np.int64),
                          "set_size": np.asarray(size, dtype=np.int64), "leading_genes": leading}, columns=COLUMNS)
    return table.sort_values(["p", "term"], kind="stable").reset_index(drop=True)


def enrich(
    adata: AnnData,
    gene_sets: GeneSets = "go_bp",
    *,
    what: Sequence[str] | None = None,
    n_hubs: int = 100,
    min_size: int = 5,
    max_size: int = 500,
    max_fdr: float = 0.25,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Which known gene sets each latent dimension, each gene module and the top hubs hold.

    - ``"dimensions"``: for each column k of ``varm["sivae_loadings"]`` and each sign, a rank test
      (`rank_enrichment`) of every set's loadings against the other genes'; sources ``dim1+``
      (the set at the positive end), ``dim1-`` (the negative end), ...
    - ``"modules"``: over-representation (`over_representation`) among each module of
      ``var["sivae_module"]`` (`gene_modules`); sources ``module M1``, ...; universe: all genes.
    - ``"hubs"``: over-representation among the ``n_hubs`` genes of highest
      ``var["sivae_centrality"]``; source ``hubs``; universe: the genes with a centrality.

    The FDR is Benjamini-Hochberg over all sets tested within one source.

    Parameters
    ----------
    adata
        AnnData after ``model.train()`` (and `gene_modules` for the modules).
    gene_sets
        A GMT path, a dict of gene lists or a built-in name (``"go_bp"``, the default, human;
        ``"go_bp_mouse"``; ``"go_bp_enrichr"``: see `sivae.tl.read_gene_sets`); matched to
        ``adata.var_names`` case-insensitively (see `sivae.tl.gene_sets` on mouse symbols).
    what
        Which of ``"dimensions"``, ``"modules"``, ``"hubs"``; None (default): each whose input
        is present in ``adata``. One named but absent is refused.
    n_hubs
        How many top hubs form the hub list.
    min_size, max_size
        Bounds on a set's number of genes found in the data.
    max_fdr
        Rows with a larger FDR are left out of the table (the FDR itself is computed over all
        sets); 1 keeps every row.
    key_added
        ``adata.uns`` key of the result; None: ``"sivae_enrichment"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``term``, ``statistic``, ``p``, ``fdr``, ``overlap``, ``set_size``,
        ``leading_genes`` (see `over_representation` and `rank_enrichment`), by source then p;
        ``.attrs["matching"]`` holds the gene-match counts. Written to ``adata.uns[key_added]``
        as ``{"results": table, "matching": counts, "gene_sets": name}``.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"enrich expects an AnnData; got {type(adata).__name__}")
    parts = _parts(adata, what)
    n_hubs = _params.count(n_hubs, "n_hubs")
    min_size, max_size = _params.count(min_size, "min_size"), _params.count(max_size, "max_size")
    max_fdr = _params.fraction(max_fdr, "max_fdr")
    library = read_gene_sets(gene_sets)  # read once: the hubs' universe may need its own match
    match = match_gene_sets(library, adata.var_names, min_size=min_size, max_size=max_size)
    _warn_low_match(match)
    tables = []
    if "dimensions" in parts:
        tables += _dimensions(adata, match)
    if "modules" in parts:
        tables += _modules(adata, match)
    if "hubs" in parts:
        tables.append(_hubs(adata, library, match, n_hubs, min_size, max_size))
    table = pd.concat(tables, ignore_index=True)
    table = table[table["fdr"] <= max_fdr].reset_index(drop=True)
    table.attrs["matching"] = dict(match.stats)
    name = gene_sets if isinstance(gene_sets, str) else "custom"
    adata.uns[KEYS.ENRICHMENT if key_added is None else key_added] = {
        "results": table.copy(), "matching": dict(match.stats), "gene_sets": str(name)}
    return table


def _parts(adata: AnnData, what: Any) -> tuple[str, ...]:
    present = {"dimensions": KEYS.LOADINGS in adata.varm, "modules": KEYS.MODULE in adata.var,
               "hubs": KEYS.CENTRALITY in adata.var}
    fixes = {"dimensions": "train a model on this AnnData first", "modules": "run sivae.tl.gene_modules first",
             "hubs": "train a model on this AnnData first"}
    where = {"dimensions": f"varm[{KEYS.LOADINGS!r}]", "modules": f"var[{KEYS.MODULE!r}]",
             "hubs": f"var[{KEYS.CENTRALITY!r}]"}
    if what is None:
        parts = tuple(p for p in PARTS if present[p])
        if not parts:
            raise InputError(f"adata has no {where['dimensions']}, {where['modules']} or {where['hubs']} to test; "
                             "train a model on this AnnData first")
        return parts
    parts = (what,) if isinstance(what, str) else tuple(what)
    for part in parts:
        if part not in PARTS:
            raise InputError(f"what must name some of {', '.join(PARTS)}; got {part!r}")
        if not present[part]:
            raise InputError(f"enrich of {part} needs adata.{where[part]}, which is absent; {fixes[part]}")
    if not parts:
        raise InputError(f"what must name at least one of {', '.join(PARTS)}")
    return parts


def _warn_low_match(match: GeneSetMatch) -> None:
    s = match.stats
    if s["n_genes_matched"] < _LOW_MATCH * s["n_genes"]:
        warnings.warn(f"only {s['n_genes_matched']:,} of the {s['n_genes']:,} genes are in any gene set; results "
                      "cover few genes (another species or identifier type?)", UserWarning, stacklevel=3)


def _dimensions(adata: AnnData, match: GeneSetMatch) -> list[pd.DataFrame]:
    loadings = np.asarray(adata.varm[KEYS.LOADINGS], dtype=np.float64)
    if not np.isfinite(loadings).all():
        raise InputError(f"adata.varm[{KEYS.LOADINGS!r}] holds NaN or infinite values; retrain the model")
    out = []
    for k in range(loadings.shape[1]):
        scores = pd.Series(loadings[:, k], index=adata.var_names)
        for sign, alternative in (("+", "greater"), ("-", "less")):
            out.append(rank_enrichment(scores, match, source=f"dim{k + 1}{sign}", alternative=alternative))
    return out


def _modules(adata: AnnData, match: GeneSetMatch) -> list[pd.DataFrame]:
    modules = adata.var[KEYS.MODULE]
    norm = (pd.Series(np.linalg.norm(np.asarray(adata.varm[KEYS.LOADINGS], dtype=float), axis=1), index=adata.var_names)
            if KEYS.LOADINGS in adata.varm else pd.Series(0.0, index=adata.var_names))
    out = []
    for name in pd.unique(modules.dropna()):
        genes = norm[(modules == name).to_numpy()].sort_values(ascending=False, kind="stable").index
        out.append(over_representation(genes, match, universe=adata.var_names, source=f"module {name}"))
    if not out:
        raise InputError(f"adata.var[{KEYS.MODULE!r}] assigns no gene to a module; rerun sivae.tl.gene_modules "
                         "with lower min_norm / min_centrality")
    return out


def _hubs(adata: AnnData, library: dict[str, list[str]], match: GeneSetMatch, n_hubs: int, min_size: int,
          max_size: int) -> pd.DataFrame:
    from .centrality import hubs

    top = hubs(adata, n=n_hubs)
    scored = pd.to_numeric(adata.var[KEYS.CENTRALITY], errors="coerce").notna().to_numpy()
    if not scored.all():  # genes without a centrality could not have been picked: not in the universe
        match = match_gene_sets(library, adata.var_names[scored], min_size=min_size, max_size=max_size)
    return over_representation(top.index, match, universe=adata.var_names[scored], source="hubs")
