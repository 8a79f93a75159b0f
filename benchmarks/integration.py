"""Issue 27: siVAE on several batches. Are the batches mixed, the cell types kept, the hubs unmoved?

Two data sets, every method in the same run, the same metrics (sivae.integration_metrics):

- **controlled**: pbmc3k's counts split at random into 3 pseudo-batches, each given a technical
  effect: a library-size factor (1.0, 0.6, 1.5), a per-gene factor drawn from a log-normal
  (sigma 0.5, one per batch and gene) and extra dropout of nonzero counts (0, 10%, 20%); new
  counts by stochastic rounding of counts x factors. The genes are the clean counts' 2,000 HVG for
  every model, so the batched models can be compared gene by gene with siVAE trained on the clean
  counts: Spearman of the centralities, and the Procrustes agreement of the loadings (1 -
  scipy.spatial.procrustes' disparity); a second clean run with another seed gives the ceiling.
  The batch models' `get_batch_effects()` are compared with the planted log factors (Spearman).
- **kang**: sivae.datasets.kang (control vs interferon-stimulated PBMCs; cell types from marker
  genes, "unassigned" cells left out of the label metrics), condition as the batch, 2,000 HVG
  chosen across conditions.

Per method: 15-NN label accuracy (5-fold CV over the embedded cells), label silhouette (scaled),
iLISI (scaled median), neighbour batch entropy, kBET acceptance within labels, and seconds. Methods:
PCA, Harmony on the PCA (harmonypy), siVAE without covariates, siVAE and VAE with ``batch_key``
(the cost ratio of the two is the issue's "at most 1.5 VAE runs"), scvi-tools' SCVI and
LinearSCVI with ``batch_key`` (own virtualenv, skipped when absent).

    .venv/bin/python benchmarks/integration.py --quick   # 300 cells each, 3 epochs, no scvi-tools
    .venv/bin/python benchmarks/integration.py           # see benchmarks/README.md for its time
    .venv/bin/python benchmarks/integration.py --merge a/integration.json b/integration.json   # join runs
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import (ScviEmbedder, add_arguments, add_scvi_argument, claim, command_line, fill_defaults, mean_sd,
                     out_dir, restore_threads, subsample, verdict, without_missing_scvi, write_result)

OURS = ("siVAE", "siVAE batch", "VAE batch")
MODELS = ("PCA", "Harmony", *OURS, "scvi SCVI", "scvi LinearSCVI")
DATASETS = ("controlled", "kang")
BATCH = "batch"
LIBRARY = (1.0, 0.6, 1.5)
DROPOUT = (0.0, 0.1, 0.2)
GENE_SIGMA = 0.5
HVG_FLAVOR = "seurat"
REFERENCES = ("siVAE clean", "siVAE clean, other seed", "PCA clean")  # runs on the controlled case's clean counts
METRICS = ("label_acc", "label_asw", "ilisi", "batch_entropy", "kbet")
COMPARED = ("centrality_spearman", "loading_agreement", "batch_effect_spearman")


def covariates_supported() -> bool:
    import sivae

    return "batch_key" in inspect.signature(sivae.pp.preprocess).parameters


def batched_counts(counts: Any, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """(counts with the technical effects, batch per cell, log gene factor per batch x gene)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    batch = rng.integers(0, len(LIBRARY), counts.shape[0])
    log_gene = rng.normal(0.0, GENE_SIGMA, (len(LIBRARY), counts.shape[1]))
    out = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
    value = out.data * np.asarray(LIBRARY)[batch[rows]] * np.exp(log_gene[batch[rows], out.indices])
    value = np.floor(value) + (rng.random(len(value)) < value - np.floor(value))  # stochastic rounding
    value[rng.random(len(value)) < np.asarray(DROPOUT)[batch[rows]]] = 0.0
    out.data = value.astype(np.float32)
    out.eliminate_zeros()
    return out, batch, log_gene


def preprocessed(adata: Any, n_top_genes: int | None, batch_key: str | None) -> Any:
    import sivae

    kwargs = {"batch_key": batch_key} if batch_key and covariates_supported() else {}
    if "flavor" in inspect.signature(sivae.pp.preprocess).parameters:
        kwargs["flavor"] = HVG_FLAVOR  # the committed run's genes (the package default became seurat_v3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped N constant features": expected on a sample
        sivae.pp.preprocess(adata, n_top_genes=n_top_genes, progress=False, **kwargs)
    restore_threads()
    return adata


def controlled(args: argparse.Namespace) -> tuple[Any, Any, np.ndarray]:
    """(clean, batched) preprocessed AnnData on the same genes, and the planted log factors of them."""
    import pandas as pd

    import sivae

    counts = subsample(sivae.datasets.pbmc3k(), args.cells, seed=0)
    batched, batch, log_gene = batched_counts(counts.X)
    counts.obs[BATCH] = pd.Categorical([f"b{b}" for b in batch])
    clean = preprocessed(counts.copy(), args.genes, None)
    genes = counts.var_names.get_indexer(clean.var_names)
    noisy = counts[:, genes].copy()
    noisy.X = batched[:, genes]
    noisy = preprocessed(noisy, None, None)  # the clean run's genes: compared gene by gene
    planted = log_gene[:, counts.var_names.get_indexer(noisy.var_names)]
    return clean, noisy, planted  # planted: batches x the batched data's genes


def kang(args: argparse.Namespace) -> Any:
    import sivae
    from sivae._constants import KEYS

    adata = sivae.datasets.kang(args.kang_cells, seed=0)
    adata.obs[BATCH] = adata.obs[KEYS.CONDITION]
    return preprocessed(adata, args.genes, BATCH)


# -- the methods: each returns (embedding, loadings or None, centrality or None, extras) -----------
def run_ours(name: str, adata: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import sivae

    kwargs: dict[str, Any] = {"n_latent": args.latent, "seed": seed}
    if args.hidden:
        kwargs["encoder_hidden"] = tuple(args.hidden)
    if name.endswith("batch"):
        kwargs["batch_key"] = BATCH
    cls = sivae.VAE if name.startswith("VAE") else sivae.SIVAE
    t0 = time.perf_counter()
    model = cls(adata.copy(), **kwargs)
    train_kw = {"max_epochs": args.epochs} if args.epochs else {}
    model.train(progress=False, **train_kw)
    seconds = time.perf_counter() - t0
    out = {"embedding": model.get_cell_embedding(), "loadings": model.get_loadings(), "seconds": seconds,
           "centrality": np.asarray(model.adata.var[model.keys.centrality], dtype=float), "effects": None}
    if name.endswith("batch"):
        out["effects"] = model.get_batch_effects()[BATCH]
    return out


def run_pca(adata: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    pca = PCA(n_components=min(args.pcs, adata.n_vars, adata.n_obs - 1), random_state=seed)
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    embedding = pca.fit_transform(x)
    return {"embedding": embedding, "loadings": pca.components_.T, "centrality": None, "effects": None,
            "seconds": time.perf_counter() - t0}


def run_harmony(adata: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import harmonypy

    pca = run_pca(adata, args, seed)
    t0 = time.perf_counter()
    harmony = harmonypy.run_harmony(pca["embedding"], adata.obs[[BATCH]], BATCH, random_state=seed, verbose=False)
    return {**pca, "loadings": None, "embedding": np.asarray(harmony.Z_corr),
            "seconds": pca["seconds"] + time.perf_counter() - t0}


def run_scvi(name: str, adata: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    peer = argparse.Namespace(**{**vars(args), "epochs": args.scvi_epochs, "hidden": args.hidden or [128]})
    embed = ScviEmbedder(name.split()[1], args.latent, seed, peer, batch_key=BATCH)
    t0 = time.perf_counter()
    embedding, _ = embed(adata, adata[:5])
    return {"embedding": embedding, "loadings": None, "centrality": None, "effects": None,
            "seconds": time.perf_counter() - t0}


def run(name: str, adata: Any, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    if name == "PCA":
        result = run_pca(adata, args, seed)
    elif name == "Harmony":
        result = run_harmony(adata, args, seed)
    elif name.startswith("scvi "):
        result = run_scvi(name, adata, args, seed)
    else:
        result = run_ours(name, adata, args, seed)
    return {**result, "genes": adata.var_names}


# -- scoring -------------------------------------------------------------------------------------
def scores(embedding: np.ndarray, adata: Any, args: argparse.Namespace) -> dict[str, float]:
    """The five metrics; label metrics over labelled cells of labels with at least 5 cells."""
    import sivae.integration_metrics as im
    from sivae._constants import KEYS

    labels = adata.obs[KEYS.CELL_TYPE].astype(str).to_numpy()
    batches = adata.obs[BATCH].astype(str).to_numpy()
    counts = {t: (labels == t).sum() for t in np.unique(labels)}
    keep = np.asarray([t != "unassigned" and counts[t] >= 5 for t in labels])
    k_mix = min(50, len(labels) // 4)
    return {"label_acc": im.knn_label_accuracy(embedding[keep], labels[keep], k=15, n_folds=5),
            "label_asw": im.label_silhouette(embedding[keep], labels[keep]),
            "ilisi": im.ilisi_score(embedding, batches, perplexity=min(30.0, (len(labels) - 1) // 3)),
            "batch_entropy": im.batch_entropy(embedding, batches, k=k_mix),
            "kbet": im.kbet(embedding[keep], batches[keep], labels[keep], k=min(25, k_mix))}


def compared(result: dict[str, Any], reference: dict[str, Any] | None, planted: np.ndarray | None) -> dict[str, Any]:
    """How far a model's gene results moved from the clean run's (controlled case only)."""
    from scipy.spatial import procrustes
    from scipy.stats import spearmanr

    out: dict[str, Any] = dict.fromkeys(COMPARED)
    if reference is None:
        return out
    # the genes both runs kept (preprocessing may drop a gene that the batch effects made constant)
    mine, theirs = result["genes"].get_indexer(reference["genes"]), np.arange(len(reference["genes"]))
    theirs, mine = theirs[mine >= 0], mine[mine >= 0]
    if result["centrality"] is not None and reference["centrality"] is not None:
        a, b = result["centrality"][mine], reference["centrality"][theirs]
        finite = np.isfinite(a) & np.isfinite(b)  # NaN: a gene constant on one run's training cells
        out["centrality_spearman"] = float(spearmanr(a[finite], b[finite])[0])
    if result["loadings"] is not None and reference["loadings"] is not None:
        out["loading_agreement"] = float(1.0 - procrustes(reference["loadings"][theirs], result["loadings"][mine])[2])
    if result["effects"] is not None and planted is not None:
        effects = np.asarray(result["effects"], dtype=float).T  # batches x genes, as planted
        centred = planted - planted.mean(axis=0)  # the model's effects are centred over batches
        out["batch_effect_spearman"] = float(np.mean([spearmanr(e, p)[0] for e, p in zip(effects, centred)]))
    return out


def one_seed(args: argparse.Namespace, data: dict[str, Any], models: list[str], seed: int) -> list[dict[str, Any]]:
    rows = []
    for dataset, (adata, clean, planted) in data.items():
        references: dict[str, dict[str, Any]] = {}
        if clean is not None:  # the clean counts' runs: the references and the ceiling
            for name, ref_seed, label in zip(("siVAE", "siVAE", "PCA"), (seed, seed + 1000, seed), REFERENCES):
                result = run(name, clean, args, ref_seed)
                references.setdefault(name, result)
                rows.append({"dataset": dataset, "model": label, "seed": seed, **scores(result["embedding"], clean, args),
                             **compared(result, references[name] if label.endswith("other seed") else None, None),
                             "seconds": result["seconds"]})
                print(f"{dataset} seed {seed} {label}: {rows[-1]}", flush=True)
        for name in models:
            result = run(name, adata, args, seed)
            family = "PCA" if name in ("PCA", "Harmony") else "siVAE"
            ref = references.get(family) if name != "Harmony" else None
            rows.append({"dataset": dataset, "model": name, "seed": seed, **scores(result["embedding"], adata, args),
                         **compared(result, ref, planted), "seconds": result["seconds"]})
            print(f"{dataset} seed {seed} {name}: {rows[-1]}", flush=True)
    return rows


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per data set and model: mean and sd over seeds of every figure."""
    table = []
    order = [*REFERENCES, *MODELS]
    keys = sorted(dict.fromkeys((r["dataset"], r["model"]) for r in runs),
                  key=lambda k: (DATASETS.index(k[0]), order.index(k[1])))
    for dataset, model in keys:
        mine = [r for r in runs if r["dataset"] == dataset and r["model"] == model]
        row: dict[str, Any] = {"dataset": dataset, "model": model, "seeds": len(mine)}
        for field in (*METRICS, *COMPARED, "seconds"):
            values = [r[field] for r in mine if r[field] is not None]
            mean, sd = mean_sd(values) if values else (None, None)
            row[field] = mean
            if field in ("label_acc", "ilisi", "centrality_spearman"):
                row[f"{field}_sd"] = sd
        table.append(row)
    return table


def claims(table: list[dict[str, Any]], skipped: str | None) -> list[dict[str, str]]:
    row = {(r["dataset"], r["model"]): r for r in table}
    get = lambda d, m, f: (row.get((d, m)) or {}).get(f)  # noqa: E731
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    out = []
    acc, clean_acc = get("controlled", "siVAE batch", "label_acc"), get("controlled", "siVAE clean", "label_acc")
    ok = None if acc is None or clean_acc is None else acc >= clean_acc - 0.01
    out.append(claim("controlled batches: siVAE with batch_key keeps label 15-NN accuracy within 1 point of the "
                     "clean-data model", "issue 27 goal (not in the paper: siVAE had no covariates)",
                     f"{fmt(acc)} with batch_key vs {fmt(clean_acc)} on clean counts (without covariates "
                     f"{fmt(get('controlled', 'siVAE', 'label_acc'))})", verdict(ok)))
    mix, scvi_mix = get("controlled", "siVAE batch", "ilisi"), get("controlled", "scvi SCVI", "ilisi")
    ok = None if mix is None or scvi_mix is None else mix >= scvi_mix
    out.append(claim("controlled batches: batch mixing (iLISI) at least SCVI's", "issue 27 goal",
                     f"iLISI {fmt(mix)} vs SCVI {fmt(scvi_mix)}" + (f" (left out: {skipped})" if skipped else "")
                     + f"; without covariates {fmt(get('controlled', 'siVAE', 'ilisi'))}", verdict(ok)))
    rho, ceiling = get("controlled", "siVAE batch", "centrality_spearman"), get(
        "controlled", "siVAE clean, other seed", "centrality_spearman")
    ok = None if rho is None else rho >= 0.9
    out.append(claim("controlled batches: centrality Spearman with the clean-data model at least 0.9",
                     "issue 27 goal", f"{fmt(rho)} with batch_key, {fmt(get('controlled', 'siVAE', 'centrality_spearman'))} "
                     f"without; two clean seeds agree to {fmt(ceiling)}", verdict(ok, partly=rho is not None and
                                                                               ceiling is not None and rho >= ceiling - 0.05)))
    parts, oks = [], []
    for metric in ("label_acc", "ilisi"):
        ours = get("kang", "siVAE batch", metric)
        for peer in ("scvi SCVI", "Harmony"):
            theirs = get("kang", peer, metric)
            parts.append(f"{metric} {fmt(ours)} vs {peer} {fmt(theirs)}")
            if ours is not None and theirs is not None:
                oks.append(ours >= theirs)
    ok = None if not oks else all(oks)
    out.append(claim("Kang (condition as batch): bio conservation and batch correction at least SCVI's and Harmony's",
                     "issue 27 goal", "; ".join(parts), verdict(ok, partly=any(oks))))
    ratios = [get(d, "siVAE batch", "seconds") / get(d, "VAE batch", "seconds") for d in DATASETS
              if get(d, "siVAE batch", "seconds") and get(d, "VAE batch", "seconds")]
    ok = None if not ratios else max(ratios) <= 1.5
    out.append(claim("a whole siVAE run with covariates costs at most 1.5 VAE runs with the same covariates",
                     "issue 27 goal", "siVAE/VAE seconds with batch_key: " + ", ".join(f"{r:.2f}" for r in ratios),
                     verdict(ok)))
    return out


SUMMARY = (
    "controlled: pbmc3k counts in 3 random pseudo-batches with library factors (1, 0.6, 1.5), per-gene log-normal "
    "factors (sd 0.5) and extra dropout (0, 10%, 20%), the clean counts' HVG for every model; 'siVAE clean' and "
    "'PCA clean' are trained on the clean counts (their mixing figures are the ceiling: the batches there are "
    "labels only) and are the references of centrality_spearman and loading_agreement (Procrustes, 1 - disparity); "
    "'siVAE clean, other seed' against 'siVAE clean' is the seed-to-seed ceiling of those. kang: control vs "
    "IFN-beta PBMCs, condition as the batch, marker-gene labels ('unassigned' left out of label metrics). "
    "label_acc: 15-NN accuracy, 5-fold CV over the embedded cells; label_asw: (silhouette + 1) / 2; ilisi: scaled "
    "median iLISI; batch_entropy: of 50 neighbours' batches; kbet: acceptance within labels (k=25); "
    "batch_effect_spearman: get_batch_effects() against the planted log factors. All figures in [0, 1], higher "
    "is better, except seconds (the whole fit, on a shared 2-core machine: compare within a run). siVAE's "
    "default pretraining='finetune' gives it the VAE's cell embedding, so their rows' cell metrics match.")


def payload_of(runs: list[dict[str, Any]], skipped: str | None, command: str, quick: bool, seconds: float,
               settings: dict[str, Any]) -> dict[str, Any]:
    table = summarise(runs)
    return {"benchmark": "integration", "paper": "none (issue 27: covariates are not in the paper)",
            "command": command, "quick": quick, "seconds": seconds, "summary": SUMMARY, "table": table,
            "claims": claims(table, skipped), "runs": runs, "skipped": skipped,
            "seeds_done": sorted({r["seed"] for r in runs}), "settings": settings,
            "effects": {"library": LIBRARY, "dropout": DROPOUT, "gene_log_sd": GENE_SIGMA}}


def _ran_elsewhere(note: str, runs: Any) -> bool:
    # a run's "left out" note is stale in a merge where another run has the models it left out
    harmony = "harmonypy" in note
    return any(r["model"] == "Harmony" if harmony else r["model"].startswith("scvi ") for r in runs)


def merge(args: argparse.Namespace, argv: list[str] | None) -> int:
    """One JSON from several runs' (each seed, data set and model once: a later file wins)."""
    parts = [json.loads(path.read_text()) for path in args.merge]
    rows = {(r["dataset"], r["model"], r["seed"]): r for part in parts for r in part["runs"]}
    skipped = "; ".join(note for note in dict.fromkeys(n for p in parts if p.get("skipped") for n in p["skipped"].split("; "))
                        if not _ran_elsewhere(note, rows.values())) or None
    commands = " && ".join(p["command"] for p in parts) + " && " + command_line(argv)
    payload = payload_of(list(rows.values()), skipped, commands, any(p["quick"] for p in parts),
                         sum(p["seconds"] for p in parts), {"parts": [p["settings"] for p in parts]})
    path = write_result(payload, out_dir(args))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--latent", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="max epochs of our models (default: theirs)")
    parser.add_argument("--scvi-epochs", type=int, default=None)
    parser.add_argument("--hidden", nargs="+", type=int, default=None)
    parser.add_argument("--genes", type=int, default=None, help="highly variable genes")
    parser.add_argument("--pcs", type=int, default=None, help="PCA components (PCA and Harmony)")
    parser.add_argument("--cells", type=int, default=None, help="pbmc3k cells of the controlled case")
    parser.add_argument("--kang-cells", type=int, default=None)
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="join these runs' JSON files (other seeds or models) into one, training nothing")
    add_scvi_argument(parser)
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args, argv)
    if args.quick and args.models is None:
        print("note: --quick leaves scvi-tools out (its start alone takes longer than the quick run)")
    fill_defaults(args, quick={"models": ["PCA", "Harmony", *OURS], "seeds": [0], "latent": 4, "epochs": 3,
                               "scvi_epochs": 3, "hidden": [32, 16], "genes": 200, "pcs": 10, "cells": 300,
                               "kang_cells": 300},
                  full={"models": list(MODELS), "seeds": [0, 1, 2], "latent": 10, "scvi_epochs": 200,
                        "genes": 2000, "pcs": 30, "kang_cells": 6000})
    if not covariates_supported():
        print("note: this sivae has no batch_key yet (issue 27's covariates): the batch rows are left out")
        args.models = [m for m in args.models if m not in ("siVAE batch", "VAE batch")]
    models, skipped = without_missing_scvi(list(args.models), args.scvi_python)
    if "Harmony" in models and importlib.util.find_spec("harmonypy") is None:
        note = "harmonypy is not installed (pip install \"sivae-torch[benchmark]\")"
        print(f"note: skipping Harmony ({note})")
        models.remove("Harmony")
        skipped = "; ".join(filter(None, [skipped, note]))
    folder = out_dir(args)
    t0 = time.perf_counter()
    data: dict[str, Any] = {}
    if "controlled" in args.datasets:
        clean, noisy, planted = controlled(args)
        data["controlled"] = (noisy, clean, planted)
    if "kang" in args.datasets:
        data["kang"] = (kang(args), None, None)
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # the JSON is rewritten after each seed: a long run stopped early keeps its seeds
        runs += one_seed(args, data, models, seed)
        payload = payload_of(runs, skipped, command_line(argv), bool(args.quick), time.perf_counter() - t0,
                             {k: v for k, v in vars(args).items() if k not in ("out", "scvi_python", "merge")})
        path = write_result(payload, folder)
    for row in payload["table"]:
        print(row)
    for c in payload["claims"]:
        print(f"[{c['reproduced']}] {c['claim']}: {c['ours']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
