"""Gamma sweep: what the interpretability term buys and costs (paper Fig. 2b with Fig. 3a).

For gamma in {0, 0.01, 0.05, 0.1, 0.5, 1}, siVAE is trained on the training folds of
pbmc68k_reduced (stratified k-fold, preprocessing fitted on the training cells:
``sivae.tl.split_fold``) and scored twice:

- cell embedding: held-out k-NN accuracy (``sivae.tl.heldout_knn_accuracy``, k=15);
- interpretation: agreement between siVAE's loadings ``varm["sivae_loadings"]`` and decoder
  saliency attributions of the same model (``sivae.tl.attribute``, summarised per dimension),
  the median over dimensions of |Spearman| (``sivae.tl.agreement``), for every fold's model.

The paper's trade-off is about its own training (``--pretraining paper``, the default here: every
parameter is free in the joint step, so gamma can move the cell embedding). As shipped
(``--pretraining finetune``) the cell encoder is a VAE's, frozen before gamma acts: gamma then
changes only the feature side, and the accuracy column is flat by construction.

    .venv/bin/python benchmarks/gamma_sweep.py --quick   # 2 gammas, 250 cells, 2 folds, few epochs
    .venv/bin/python benchmarks/gamma_sweep.py           # 6 gammas x 5 folds, 700 cells
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import (add_arguments, claim, command_line, fill_defaults, folds, heldout_accuracy, mean_sd, out_dir,
                     preprocessed_fold, save_figure, subsample, verdict, write_result)

from sivae.train.modes import TRAINING_MODES

GAMMAS = (0.0, 0.01, 0.05, 0.1, 0.5, 1.0)


def interpretation_agreement(model: Any, n_cells: int) -> float:
    """Median |Spearman| over dimensions between the loadings and summarised decoder saliency."""
    from sivae import KEYS
    from sivae.tl import agreement, attribute

    attr = attribute(model, model.adata, method="saliency", target="decoder", n_cells=min(n_cells, model.adata.n_obs))
    table = agreement(model.adata, {"loadings": KEYS.LOADINGS, "saliency": attr}, key_added=None)
    return float(table["median"].iloc[0])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import sivae

    adata = subsample(sivae.datasets.pbmc68k_reduced(), args.max_cells, 0)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    splits = folds(labels, args.folds, args.use_folds, seed=0)
    rows = []
    for pretraining, gamma in [(p, g) for p in args.pretraining for g in args.gammas]:
        for i, (tr, te) in enumerate(splits):
            t0 = time.perf_counter()
            train, test = preprocessed_fold(adata, tr, te, preprocess_mode="scale")
            model = sivae.SIVAE(train, n_latent=args.latent, gamma=gamma, encoder_hidden=tuple(args.hidden),
                                c_red=args.c_red, seed=0)
            model.train(max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, pretraining=pretraining,
                        progress=False)
            acc = heldout_accuracy(model, test, labels[tr], labels[te], k=15)
            agree = interpretation_agreement(model, args.attr_cells)
            rows.append({"pretraining": pretraining, "gamma": gamma, "fold": i, "accuracy": acc, "agreement_median": agree,
                         "seconds": time.perf_counter() - t0})
            print(f"{pretraining} gamma={gamma} fold {i}: held-out k-NN accuracy {acc:.3f}, loadings-vs-saliency agreement "
                  f"{agree:.3f}", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], latent: int) -> list[dict[str, Any]]:
    """One row per (training procedure, gamma): mean and sd over folds."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (pretraining, gamma), part in frame.groupby(["pretraining", "gamma"], sort=False):
        (acc, acc_sd), (agree, agree_sd) = mean_sd(part["accuracy"]), mean_sd(part["agreement_median"])
        out.append({"pretraining": pretraining, "gamma": float(gamma), "K": latent, "folds": len(part),
                    "accuracy_mean": acc, "accuracy_sd": acc_sd, "agreement_median": agree, "agreement_sd": agree_sd,
                    "seconds_per_fit": float(part["seconds"].mean())})
    return out


def claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for pretraining in dict.fromkeys(r["pretraining"] for r in table):
        by = {r["gamma"]: r for r in table if r["pretraining"] == pretraining}
        if not (0.0 in by and 0.05 in by):
            continue
        a, b = by[0.05], by[0.0]
        how = f" (pretraining='{pretraining}')"
        out.append(claim("gamma=0.05 costs no cell-embedding accuracy against gamma=0 (within 0.02)" + how,
                         "Fig. 2b: siVAE and siVAE (gamma=0) comparable",
                         f"{a['accuracy_mean']:.3f} +- {a['accuracy_sd']:.3f} vs {b['accuracy_mean']:.3f} +- "
                         f"{b['accuracy_sd']:.3f}",
                         verdict(a["accuracy_mean"] >= b["accuracy_mean"] - 0.02)))
        out.append(claim("the interpretability term makes loadings agree more with attributions" + how,
                         "Fig. 3a: siVAE loadings agree with decoder attributions",
                         f"median |Spearman| {a['agreement_median']:.3f} +- {a['agreement_sd']:.3f} (gamma=0.05) vs "
                         f"{b['agreement_median']:.3f} +- {b['agreement_sd']:.3f} (gamma=0), mean +- sd over folds",
                         verdict(a["agreement_median"] > b["agreement_median"])))
    return out


def figure(table: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for pretraining in dict.fromkeys(r["pretraining"] for r in table):
        part = [r for r in table if r["pretraining"] == pretraining]
        ax.errorbar([r["agreement_median"] for r in part], [r["accuracy_mean"] for r in part],
                    xerr=[r["agreement_sd"] for r in part], yerr=[r["accuracy_sd"] for r in part],
                    marker="o", capsize=3, label=f"pretraining={pretraining}")
        for r in part:
            ax.annotate(f"{r['gamma']:g}", (r["agreement_median"], r["accuracy_mean"]), fontsize=8,
                        textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("loadings vs decoder saliency, median |Spearman|")
    ax.set_ylabel("held-out k-NN accuracy")
    ax.set_title("siVAE on pbmc68k_reduced: the gamma trade-off (labels: gamma)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def merge(paths: list[Path], folder: Path) -> int:
    """One JSON from several runs of this script (e.g. one per training procedure)."""
    import json

    parts = [json.loads(p.read_text()) for p in paths]
    rows = []
    for part in parts:
        procedures = part["settings"]["pretraining"]  # runs written before rows named their procedure
        rows += [{"pretraining": procedures if isinstance(procedures, str) else procedures[0], **row}
                 for row in part["runs"]]
    latents = {part["settings"]["latent"] for part in parts}
    if len(latents) != 1:
        raise SystemExit(f"the runs have different K ({sorted(latents)}); merge runs of one K")
    table = summarise(rows, latents.pop())
    png = figure(table, folder / "gamma_sweep.png")
    payload = {"benchmark": "gamma_sweep", "paper": "Fig. 2b, Fig. 3a (trade-off)",
               "command": " && ".join([*(p["command"] for p in parts), command_line()]),
               "quick": all(p["quick"] for p in parts), "seconds": sum(p["seconds"] for p in parts),
               "table": table, "claims": claims(table), "runs": rows, "figures": [png.name],
               "settings": [p["settings"] for p in parts], "summary": parts[0]["summary"]}
    print(f"wrote {write_result(payload, folder)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--gammas", nargs="+", type=float, default=None)
    parser.add_argument("--latent", type=int, default=5)
    parser.add_argument("--folds", type=int, default=None, help="folds of the split (default 5; quick 2)")
    parser.add_argument("--use-folds", type=int, default=None, help="how many of them to train on (default all)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--max-cells", type=int, default=None)
    parser.add_argument("--hidden", nargs="+", type=int, default=None)
    parser.add_argument("--c-red", type=int, default=100)
    parser.add_argument("--attr-cells", type=int, default=100, help="cells whose attributions are summarised")
    parser.add_argument("--pretraining", nargs="+", choices=tuple(TRAINING_MODES), default=["paper"],
                        help="siVAE's training procedures (default paper: the trade-off the paper describes)")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="train nothing: combine earlier JSON files of this script into one")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, out_dir(args))
    fill_defaults(args, quick={"gammas": [0.0, 0.05], "folds": 2, "use_folds": 1, "epochs": 3, "pretrain_epochs": 2,
                               "max_cells": 250, "hidden": [32, 16]},
                  full={"gammas": list(GAMMAS), "folds": 5, "use_folds": 5, "epochs": 100, "pretrain_epochs": None,
                        "max_cells": None, "hidden": [256, 64]})
    folder = out_dir(args)
    t0 = time.perf_counter()
    rows = run(args)
    table = summarise(rows, args.latent)
    png = figure(table, folder / "gamma_sweep.png")
    payload = {"benchmark": "gamma_sweep", "paper": "Fig. 2b, Fig. 3a (trade-off)", "command": command_line(),
               "quick": bool(args.quick), "seconds": time.perf_counter() - t0, "table": table,
               "claims": claims(table), "runs": rows, "figures": [png.name],
               "settings": {k: getattr(args, k) for k in ("gammas", "latent", "folds", "use_folds", "epochs",
                                                           "pretrain_epochs", "max_cells", "hidden", "attr_cells",
                                                           "pretraining")},
               "summary": "siVAE at each gamma: held-out k-NN accuracy (mean +- sd over folds) and agreement of "
                          "its loadings with its decoder's saliency attributions (mean over the folds' models)."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
