"""Gene hubs and neighbourhoods without a network, against the GRN methods (paper Fig. 5a-e).

Per data set (the simulated network with its known hubs and edges; pbmc3k, 2,000 HVG):
  - ground-truth centrality (sivae.tl.centrality_ground_truth: mean PVE of all other genes);
  - centrality of siVAE (reconstruction accuracy), of CLR, MRNET, ARACNE and GRNBoost2 (degree
    centrality of their networks), and of siVAE-GRN (CLR on cells sampled from the model):
    Spearman with the ground truth (paper, fetal liver: siVAE 0.90, GRN median 0.36), and the
    mean ground truth of each method's top 20 (paper: 0.092 against a GRN median of 0.074);
  - neighbourhood benchmark (sivae.tl.compare_neighborhoods, k = 20): held-out PVE of each query
    gene from each method's 20 neighbours, Jaccard and mean-correlation overlap matrices;
  - edge recovery (AUROC, AUPRC ratio, EPR) where the edges are known (simulated network);
  - the wall time of every method. Ratios are printed against the GRN methods of the same run.

GRNBoost2 runs with learning rate 0.1 and at most 100 trees per target (arboreto: 0.01 and 5,000)
and, on pbmc3k, 50 seeded random candidate regulators: with arboreto's settings it would take
hours per data set on 2 cores. Its other settings and its early stopping are arboreto's.

    .venv/bin/python benchmarks/networks.py --quick    # ~1 min: small data, small models, few
                                                       # trees and epochs (a smoke run, not results)
    .venv/bin/python benchmarks/networks.py            # ~10-20 min on 2 CPU cores

Full mode: the simulated network at 3,000 cells (query genes: the intersection of each method's
top 100 of its 300 genes, since top 500 would be all of them); pbmc3k, all 2,638 cells.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import sivae
from sivae import KEYS

from _common import add_arguments, claim, command_line, out_dir, verdict, write_result

GRN_METHODS = ("clr", "mrnet", "aracne", "grnboost2")
LABELS = {"clr": "CLR", "mrnet": "MRNET", "aracne": "ARACNE", "grnboost2": "GRNBoost2"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--datasets", default="simulated,pbmc3k", help="comma-separated: simulated, pbmc3k")
    p.add_argument("--n-jobs", type=int, default=2, help="GRNBoost2's parallel jobs (default 2)")
    args = p.parse_args(argv)
    args.out = out_dir(args)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    return args


def load(name: str, quick: bool) -> tuple[Any, dict[str, Any]]:
    """(AnnData, settings) of one data set."""
    if name == "simulated":
        adata = sivae.datasets.simulated_network(n_cells=800 if quick else 3000, seed=0)
        return adata, {"n_latent": 8, "hidden": (64, 32) if quick else (256, 128), "epochs": 10 if quick else 30,
                       "regulators": None, "n_top": 100}
    adata = sivae.datasets.pbmc3k()
    if quick:
        adata = adata[np.random.default_rng(0).choice(adata.n_obs, 500, replace=False)].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped N constant features": expected on a sample
        sivae.pp.preprocess(adata, n_top_genes=150 if quick else 2000, progress=False)
    return adata, {"n_latent": 8 if quick else 16, "hidden": (128, 64) if quick else (256, 128),
                   "epochs": 10 if quick else 60, "regulators": 50, "n_top": 500}


# CPU seconds of each step in this process (GRNBoost2's joblib workers not counted): on a shared
# machine the wall times grow with the load, the CPU seconds much less
CPU_SECONDS: dict[str, float] = {}


def timed(label: str, fn, *args, **kwargs) -> tuple[Any, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU_SECONDS[label] = CPU_SECONDS.get(label, 0.0) + time.process_time() - c0
    return out, time.perf_counter() - t0


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    adata, s = load(name, args.quick)
    CPU_SECONDS.clear()
    print(f"\n== {name}: {adata.n_obs} cells x {adata.n_vars} genes", flush=True)
    seconds: dict[str, float] = {}
    model = sivae.SIVAE(adata, n_latent=s["n_latent"], encoder_hidden=s["hidden"], seed=0, device="cpu")
    _, seconds["siVAE"] = timed("siVAE", model.train, max_epochs=s["epochs"], progress=False)
    print(f"  siVAE: {seconds['siVAE']:.1f} s", flush=True)
    truth, seconds["ground truth"] = timed("ground truth", sivae.tl.centrality_ground_truth, adata, epochs=3 if args.quick else 10,
                                           n_components=16 if args.quick else 64)
    print(f"  ground truth: {seconds['ground truth']:.1f} s", flush=True)
    networks: dict[str, pd.DataFrame] = {}
    for method in GRN_METHODS:
        options: dict[str, Any] = {}
        if method == "grnboost2":
            options = {"learning_rate": 0.1, "max_trees": 10 if args.quick else 100,
                       "n_jobs": 1 if args.quick else args.n_jobs}  # quick: no worker start-up
            if s["regulators"] or args.quick:
                n_reg = min(20 if args.quick else s["regulators"], adata.n_vars)
                options["regulators"] = list(np.random.default_rng(0).choice(adata.var_names, n_reg, replace=False))
        networks[LABELS[method]], seconds[LABELS[method]] = timed(LABELS[method], sivae.tl.grn, adata, method=method, **options)
        print(f"  {LABELS[method]}: {seconds[LABELS[method]]:.1f} s", flush=True)
    sample, seconds["siVAE-GRN"] = timed("siVAE-GRN", model.sample, adata.n_obs, seed=0)
    networks["siVAE-GRN"], t = timed("siVAE-GRN", sivae.tl.grn, sample, method="clr")
    seconds["siVAE-GRN"] += t

    centrality = {"siVAE": adata.var[KEYS.CENTRALITY].astype(float)}
    centrality.update({m: sivae.tl.degree_centrality(w) for m, w in networks.items()})
    methods = {"siVAE-Euc": KEYS.LOADINGS, **networks}
    given = {"siVAE-Euc": centrality["siVAE"]}
    n_top = adata.n_vars // 2 if args.quick else s["n_top"]
    cmp, seconds["neighbourhood benchmark"] = timed("neighbourhood benchmark",
        sivae.tl.compare_neighborhoods, adata, methods, k=20, n_top=n_top, centralities=given,
        epochs=5 if args.quick else 20)
    edges = adata.uns.get(KEYS.SIMULATED_NETWORK, {}).get("edges")
    rows = []
    for method, values in centrality.items():
        top = values.sort_values(ascending=False, kind="stable").index[:20]
        hood = "siVAE-Euc" if method == "siVAE" else method
        rec = sivae.tl.edge_recovery(networks[method], edges) if edges is not None and method in networks else None
        rows.append({
            "dataset": name, "method": method,
            "spearman_vs_truth": float(spearmanr(values, truth.loc[values.index]).statistic),
            "top20_mean_truth": float(truth.loc[top].mean()),
            "neighborhood_pve": float(cmp["pve"][hood].mean()),
            "auroc": None if rec is None else rec["auroc"],
            "auprc_ratio": None if rec is None else rec["auprc_ratio"],
            "early_precision_ratio": None if rec is None else rec["early_precision_ratio"],
            "hubs_in_top10": (int(adata.var.loc[values.nlargest(10).index, KEYS.IS_HUB].sum())
                              if KEYS.IS_HUB in adata.var else None),
            "seconds": seconds[method],
            "cpu_seconds": CPU_SECONDS[method],
        })
    figures(name, centrality, truth, cmp, args.out)
    report(name, rows, seconds, cmp)
    return {"rows": rows, "seconds": seconds, "cpu_seconds": dict(CPU_SECONDS), "n_query": len(cmp["query"]), "load_average": os.getloadavg(),
            "jaccard": cmp["jaccard"].round(4).to_dict(), "correlation": cmp["correlation"].round(4).to_dict(),
            "best_possible_top20_truth": float(truth.nlargest(20).mean())}


def report(name: str, rows: list[dict], seconds: dict[str, float], cmp: dict) -> None:
    table = pd.DataFrame(rows).set_index("method")
    grn = table.loc[[LABELS[m] for m in GRN_METHODS]]
    print(table.drop(columns="dataset").round(3).to_string())
    print(f"siVAE Spearman {table.loc['siVAE', 'spearman_vs_truth']:.3f} vs GRN median "
          f"{grn['spearman_vs_truth'].median():.3f}; siVAE top-20 truth / GRN median "
          f"{table.loc['siVAE', 'top20_mean_truth'] / grn['top20_mean_truth'].median():.2f}x; "
          f"siVAE seconds / CLR seconds {seconds['siVAE'] / seconds['CLR']:.1f}x; "
          f"ground truth {seconds['ground truth']:.1f} s; neighbourhoods ({len(cmp['query'])} queries) "
          f"{seconds['neighbourhood benchmark']:.1f} s")
    print("Jaccard:\n" + cmp["jaccard"].round(2).to_string())


def figures(name: str, centrality: dict, truth: pd.Series, cmp: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sivae.pl.centrality_truth(centrality, truth, path=out / f"networks_{name}_centrality.png")
    sivae.pl.cumulative_truth(centrality, truth, n=50, path=out / f"networks_{name}_cumulative.png")
    sivae.pl.neighborhood_pve(cmp, path=out / f"networks_{name}_pve.png")
    sivae.pl.overlap(cmp["jaccard"], title="Jaccard index", path=out / f"networks_{name}_jaccard.png")
    sivae.pl.overlap(cmp["correlation"], title="mean correlation", path=out / f"networks_{name}_correlation.png")


def claims(results: dict[str, dict]) -> list[dict]:
    out = []
    for name, res in results.items():
        t = pd.DataFrame(res["rows"]).set_index("method")
        grn = t.loc[[LABELS[m] for m in GRN_METHODS]]
        s_rho, g_rho = t.loc["siVAE", "spearman_vs_truth"], grn["spearman_vs_truth"].median()
        out.append(claim(f"siVAE's centrality tracks the ground truth better than GRN degree centrality ({name})",
                         "fetal liver: Spearman 0.90 (siVAE) vs median 0.36 (GRN methods)",
                         f"Spearman {s_rho:.2f} (siVAE) vs median {g_rho:.2f} (CLR, MRNET, ARACNE, GRNBoost2)",
                         verdict(s_rho > g_rho)))
        s_top, g_top = t.loc["siVAE", "top20_mean_truth"], grn["top20_mean_truth"].median()
        out.append(claim(f"siVAE's top-20 hubs have higher ground-truth centrality than the GRN methods' ({name})",
                         "fetal liver: 0.092 (siVAE) vs median 0.074",
                         f"{s_top:.3f} (siVAE) vs median {g_top:.3f} (best possible "
                         f"{res['best_possible_top20_truth']:.3f})", verdict(s_top > g_top)))
        pve = t["neighborhood_pve"]
        out.append(claim(f"siVAE-Euc and GRN neighbourhoods are about equally predictive of the query gene ({name})",
                         "median 79.9% +- 0.84 s.d. PVE across methods (excluding LDVAE and ARACNE)",
                         f"siVAE-Euc {pve['siVAE']:.3f}; GRN methods {grn['neighborhood_pve'].min():.3f}-"
                         f"{grn['neighborhood_pve'].max():.3f} ({res['n_query']} query genes)",
                         verdict(abs(pve["siVAE"] - grn["neighborhood_pve"].median()) < 0.05, partly=True)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for name in args.datasets:  # written after each data set, so a long run keeps what it did
        results[name] = run_dataset(name, args)
        write_payload({**kept_results(args), **results}, args, argv, time.perf_counter() - t0)
    return 0


def kept_results(args: argparse.Namespace) -> dict[str, dict]:
    """Results of data sets not run now, from the networks.json in --out (same --quick), read just
    before writing, so data sets can run separately or side by side and still end in one file."""
    path = args.out / "networks.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if old.get("quick") != bool(args.quick):
        return {}
    return {name: res for name, res in old.get("datasets", {}).items() if name not in args.datasets}


def write_payload(results: dict[str, dict], args: argparse.Namespace, argv: list[str] | None, seconds: float) -> None:
    payload = {
        "benchmark": "networks", "paper": "Fig. 5a-e",
        "command": command_line(argv),
        "quick": bool(args.quick), "seconds": seconds,
        "table": [row for res in results.values() for row in res["rows"]],
        "claims": claims(results),
        "datasets": results,
    }
    print(f"\nwrote {write_result(payload, args.out)} ({', '.join(results)}) after {seconds:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
