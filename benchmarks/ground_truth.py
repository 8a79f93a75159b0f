"""Which ground-truth centrality to trust: the paper's networks, the package default, or no network.

Issue 26, part 1. On pbmc3k (2,000 HVG) the ground truth three ways, on the same query genes:
  - "paper networks": one network per query gene, 1 -> 128-512-1024 -> every other gene (no
    compression), Adam to an early stop (each network keeps its best validation epoch);
  - "default": the package default of sivae.tl.centrality_ground_truth (32-16, 10 epochs, targets
    the top 64 principal components);
  - "default, early stop": the default's networks trained to an early stop instead of 10 epochs;
  - "binned": sivae.tl.centrality_ground_truth_binned (quantile bins of the query gene, ANOVA's
    omega squared), no training.
The paper's networks cost ~200x the default per gene, so every estimate is made on the same
``--n-query`` genes, chosen at evenly spaced ranks of the detection rate (so the whole range of
sparsity is covered). For each: its split-half reliability (two halves of the cells), its cost,
its Spearman with the detection rate (how much of it is sparsity), its agreement with the other
truths, and how the one-second baselines and the models of benchmarks/hubs.py (their per-gene
scores, read from benchmarks/results/hubs_parts/ when the genes match) rank against it.

    .venv/bin/python benchmarks/ground_truth.py            # full: 24 query genes, ~1 h on 2 cores
    .venv/bin/python benchmarks/ground_truth.py --quick    # 300 cells, 100 genes, seconds
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from _common import RESULTS, add_arguments, claim, command_line, name_formula, out_dir, verdict, write_result

# the genes of hubs.py's committed runs (its HVG_FLAVOR), so their per-gene scores line up
HVG_FLAVOR = "seurat"
TRUTHS = ("paper networks", "default", "default, early stop", "binned")


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    """Each truth's keyword arguments for sivae.tl (None: the binned estimate)."""
    early = {"epochs": 4 if quick else 100, "patience": 2 if quick else 5}
    return {
        "paper networks": {"hidden": (16, 32) if quick else (128, 512, 1024), "n_components": None,
                           "batch_size": 128, "learning_rate": 1e-3, **early},
        "default": {},
        "default, early stop": dict(early),
        "binned": None,
    }


def load(quick: bool):
    import sivae

    adata = sivae.datasets.pbmc3k()
    if quick:
        adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, 300, replace=False))].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped N constant features": expected on a sample
        sivae.pp.preprocess(adata, n_top_genes=100 if quick else 2000, progress=False,
                            flavor=HVG_FLAVOR)
    return adata


def query_genes(detection: pd.Series, n: int) -> list[str]:
    """``n`` genes at evenly spaced ranks of the detection rate, lowest to highest."""
    order = detection.sort_values(kind="stable").index
    return list(order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))])


def estimate(adata, name: str, options: dict[str, Any] | None, genes: list[str], seed: int = 0) -> pd.Series:
    import sivae

    if options is None:
        return sivae.tl.centrality_ground_truth_binned(adata, seed=seed)[genes]
    return sivae.tl.centrality_ground_truth(adata.copy(), genes=genes, seed=seed, **options)[genes]


def stored_scores(genes_all: list[str]) -> dict[str, pd.Series]:
    """Per-gene scores of hubs.py's full pbmc3k run (baselines, siVAE and VAE seeds), when its genes match."""
    scores: dict[str, list[pd.Series]] = {}
    for path in sorted((RESULTS / "hubs_parts").glob("hubs_pbmc3k_*.json")):
        part = json.loads(path.read_text())["datasets"].get("pbmc3k")  # not "pbmc3k seurat_v3"
        if part is None or part["genes"] != genes_all:
            continue
        for method, per_seed in name_formula(part).get("scores", {}).items():  # {seed: [value per gene]}; no label mixes formulas
            for values in per_seed.values():
                scores.setdefault(method, []).append(
                    pd.Series([np.nan if v is None else v for v in values], index=part["genes"], dtype=float))
    return {m: pd.concat(v, axis=1).mean(1) if len(v) > 1 else v[0] for m, v in scores.items()}


def rho(a: pd.Series, b: pd.Series) -> float:
    both = np.isfinite(a.to_numpy(float)) & np.isfinite(b.to_numpy(float))
    return float(spearmanr(a[both], b[both]).statistic) if both.sum() > 3 else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    p.add_argument("--n-query", type=int, default=None, help="query genes (default 24; 20 with --quick)")
    p.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=TRUTHS)
    args = p.parse_args(argv)
    n_query = args.n_query or (20 if args.quick else 24)
    t_start = time.perf_counter()
    import sivae
    from sivae.tl.reliability import noise_ceiling, partial_spearman

    adata = load(args.quick)
    detection = sivae.tl.detection_rate(adata)
    genes = query_genes(detection, n_query)
    print(f"{adata.n_obs} cells x {adata.n_vars} genes; {len(genes)} query genes", flush=True)
    truths, rows = {}, []
    for name in args.truths:
        options = settings(args.quick)[name]
        t0 = time.perf_counter()
        truths[name] = estimate(adata, name, options, genes)
        seconds = time.perf_counter() - t0
        order = np.random.default_rng(0).permutation(adata.n_obs)
        halves = [estimate(adata[np.sort(h)].copy(), name, options, genes) for h in np.array_split(order, 2)]
        r = rho(*halves)
        rows.append({"truth": name, "n_query": len(genes), "seconds": round(seconds, 1),
                     "seconds_per_gene": round(seconds / len(genes), 3), "split_half_r": round(r, 4),
                     "noise_ceiling": round(noise_ceiling(r), 4) if np.isfinite(r) else None,
                     "spearman_with_detection": round(rho(truths[name], detection[genes]), 4)})
        print(rows[-1], flush=True)
    agreement = [{"truth": a, "other": b, "spearman": round(rho(truths[a], truths[b]), 4)}
                 for i, a in enumerate(truths) for b in list(truths)[i + 1:]]
    methods = {"detection rate": detection, "PCA R^2": sivae.tl.pca_centrality(adata, n_components=10, key_added=None),
               "correlation degree": sivae.tl.correlation_degree(adata)}
    if not args.quick:
        methods.update({f"{m} (hubs.py run)": s for m, s in stored_scores(list(adata.var_names)).items()})
    ranking = [{"truth": t, "method": m, "spearman": finite(rho(s[genes], truths[t])),
                "partial_spearman": finite(partial_spearman(s[genes], truths[t], detection[genes]))}
               for t in truths for m, s in methods.items()]
    table = [{**row, **{"vs " + o: 1.0 if o == row["truth"] else next(
        (a["spearman"] for a in agreement if {a["truth"], a["other"]} == {row["truth"], o}), None) for o in TRUTHS}}
             for row in rows]
    payload = {"benchmark": "ground_truth", "paper": "Methods, 'Estimating the ground truth gene centrality'; Fig. 5a",
               "command": command_line(argv), "quick": bool(args.quick), "seconds": time.perf_counter() - t_start,
               "table": table, "claims": claims(rows, agreement, ranking), "agreement": agreement,
               "ranking": ranking, "query_genes": genes,
               "truths": {t: [finite(v) for v in truths[t]] for t in truths}}
    for row in ranking:
        print(row, flush=True)
    print("wrote", write_result(payload, out_dir(args)))


def finite(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def claims(rows: list[dict], agreement: list[dict], ranking: list[dict]) -> list[dict]:
    by = {r["truth"]: r for r in rows}
    out = []
    if "paper networks" in by and "binned" in by:
        a = next(x["spearman"] for x in agreement if {x["truth"], x["other"]} == {"paper networks", "binned"})
        out.append(claim("the paper's ground-truth networks and the network-free binned estimate agree",
                         "one estimate, by networks of 128-512-1024 per query gene",
                         f"Spearman {a:.2f} on {by['binned']['n_query']} query genes; split-half r paper "
                         f"{by['paper networks']['split_half_r']:.2f} vs binned {by['binned']['split_half_r']:.2f}",
                         verdict(a >= 0.8, partly=a >= 0.6)))
    return out


if __name__ == "__main__":
    main()
