"""Feature-input reduction (paper Fig. S12): PCA vs stratified downsampling vs the full input.

The feature-wise encoder reads each gene's column over the training cells, reduced to C_red values
(``SIVAE(feature_input="pca" | "downsample", c_red=...)``); "full" is downsampling to every
training cell, i.e. no reduction. For each setting, siVAE is scored on:

- cells: held-out k-NN accuracy of the cell embedding on pbmc68k_reduced (stratified folds,
  preprocessing fitted on the training cells, downsampling stratified by cell type);
- genes: community silhouette of the feature embedding on the simulated network (five
  communities; isolated genes left out);
- training time (seconds per fit, whole three-step training).

Fig. S12 is about the paper's training (``--pretraining paper``, the default here), where the
feature-wise input shapes the cell embedding through the joint step. As shipped
(``--pretraining finetune``) the cell encoder is a VAE's, frozen first: the reduction then changes
only the gene embedding, and the cell column is the same for every setting.

    .venv/bin/python benchmarks/feature_input.py --quick   # C_red 10 and full, tiny networks
    .venv/bin/python benchmarks/feature_input.py           # C_red 20/50/100/200 + full, 5 folds
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from _common import (add_arguments, claim, command_line, fill_defaults, folds, heldout_accuracy, mean_sd, out_dir,
                     preprocessed_fold, subsample, verdict, write_result)

from sivae.train.modes import TRAINING_MODES


def settings_grid(c_reds: list[int]) -> list[tuple[str, int | None]]:
    """(method, C_red) pairs; C_red None: the full input."""
    return [(m, c) for c in c_reds for m in ("pca", "downsample")] + [("full", None)]


def model_kwargs(method: str, c_red: int | None, n_cells: int, args: argparse.Namespace, labels: bool) -> dict:
    kwargs: dict[str, Any] = dict(n_latent=args.latent, encoder_hidden=tuple(args.hidden), seed=0)
    if method == "full":  # every cell the model trains on (it holds 10% out for early stopping)
        n_train = n_cells - int(np.ceil(n_cells * 0.1)) - 1
        return {**kwargs, "feature_input": "downsample", "c_red": n_train, "feature_input_cells": None}
    kwargs.update(feature_input=method, c_red=c_red)
    if method == "downsample" and labels:
        kwargs["cell_type_key"] = "cell_type"
    return kwargs


def cell_scores(method: str, c_red: int | None, args: argparse.Namespace, adata: Any,
                splits: list) -> tuple[float, float, float]:
    import sivae

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    accs, seconds = [], []
    for tr, te in splits:
        train, test = preprocessed_fold(adata, tr, te, preprocess_mode="scale")
        model = sivae.SIVAE(train, **model_kwargs(method, c_red, train.n_obs, args, labels=True))
        t0 = time.perf_counter()
        model.train(max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, pretraining=args.pretraining,
                    progress=False)
        seconds.append(time.perf_counter() - t0)
        accs.append(heldout_accuracy(model, test, labels[tr], labels[te], k=15))
    return (*mean_sd(accs), float(np.mean(seconds)))


def gene_score(method: str, c_red: int | None, args: argparse.Namespace, network: Any) -> float:
    import sivae
    from sivae import KEYS
    from sivae.tl import loading_silhouette

    adata = network.copy()
    model = sivae.SIVAE(adata, **model_kwargs(method, c_red, adata.n_obs, args, labels=False))
    model.train(max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, pretraining=args.pretraining,
                progress=False)
    isolated = adata.var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    return loading_silhouette(adata.varm[KEYS.LOADINGS][~isolated], adata.var[KEYS.COMMUNITY].to_numpy()[~isolated])


def claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Fig. S12's two statements; "partly" where PCA (the default reduction) keeps the full input's
    figure at every C_red and downsampling does not."""
    full = next((r for r in table if r["method"] == "full"), None)
    reduced = [r for r in table if r["method"] != "full"]
    if full is None or not reduced:
        return []
    out = []
    for metric, what, margin, text, paper, fits in (
            ("cell_accuracy_mean", "cell k-NN accuracy", 0.03,
             "reducing the feature-wise input (PCA or downsampling) keeps the cell-embedding accuracy",
             "Fig. S12: comparable clustering accuracy with reduced input", f"mean over {full['folds']} fold(s)"),
            ("community_silhouette", "community silhouette", 0.1,
             "reducing the feature-wise input keeps the gene embedding's communities",
             "Fig. S12: gene-embedding accuracy comparable", "one fit per setting")):
        held = {}
        shown = []
        for method in dict.fromkeys(r["method"] for r in reduced):
            worst = min((r for r in reduced if r["method"] == method), key=lambda r: r[metric])
            held[method] = full[metric] - worst[metric] <= margin
            shown.append(f"lowest {method} {worst[metric]:.3f} (C_red={worst['c_red']})")
        out.append(claim(text, paper, f"{what}: full input {full[metric]:.3f}; " + "; ".join(shown)
                         + f" (within {margin} of the full input counts as kept; {fits})",
                         verdict(all(held.values()), partly=bool(held.get("pca")))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--c-red", nargs="+", type=int, default=None, help="C_red values (default 20 50 100 200)")
    parser.add_argument("--latent", type=int, default=5)
    parser.add_argument("--folds", type=int, default=None, help="folds of the split (default 5; quick 2)")
    parser.add_argument("--use-folds", type=int, default=None, help="how many folds to train on (default all)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--max-cells", type=int, default=None, help="pbmc68k_reduced subsample")
    parser.add_argument("--network-cells", type=int, default=None, help="simulated network cells (default 2,000)")
    parser.add_argument("--hidden", nargs="+", type=int, default=None)
    parser.add_argument("--pretraining", choices=tuple(TRAINING_MODES), default="paper",
                        help="siVAE's training procedure (default paper: what Fig. S12 measures)")
    args = parser.parse_args(argv)
    quick = {"c_red": [10], "folds": 2, "use_folds": 1, "epochs": 3, "pretrain_epochs": 2, "max_cells": 250,
             "network_cells": 400, "hidden": [32, 16]}
    full = {"c_red": [20, 50, 100, 200], "folds": 5, "use_folds": 5, "epochs": 100, "pretrain_epochs": None,
            "max_cells": None, "network_cells": 2000, "hidden": [256, 64]}
    fill_defaults(args, quick, full)
    import sivae

    folder = out_dir(args)
    t0 = time.perf_counter()
    cells = subsample(sivae.datasets.pbmc68k_reduced(), args.max_cells, 0)
    splits = folds(cells.obs["cell_type"], args.folds, args.use_folds, seed=0)
    network = sivae.datasets.simulated_network(n_cells=args.network_cells, seed=0)
    table = []
    for method, c_red in settings_grid(args.c_red):
        acc, sd, seconds = cell_scores(method, c_red, args, cells, splits)
        sil = gene_score(method, c_red, args, network)
        table.append({"method": method, "c_red": c_red if c_red is not None else "all training cells",
                      "cell_accuracy_mean": acc, "cell_accuracy_sd": sd, "folds": len(splits),
                      "community_silhouette": sil, "train_seconds": seconds})
        print(f"{method:10s} C_red={c_red}: cell accuracy {acc:.3f} +- {sd:.3f}, community silhouette {sil:.3f}, "
              f"{seconds:.1f} s per fit", flush=True)
    payload = {"benchmark": "feature_input", "paper": "Fig. S12", "command": command_line(), "quick": bool(args.quick),
               "seconds": time.perf_counter() - t0, "table": table, "claims": claims(table),
               "settings": {k: getattr(args, k) for k in ("c_red", "latent", "folds", "use_folds", "epochs",
                                                           "pretrain_epochs", "max_cells", "network_cells", "hidden",
                                                           "pretraining")},
               "summary": "siVAE's feature-wise input reduced by PCA or stratified downsampling to C_red values, "
                          "against the full input: cells (pbmc68k_reduced held-out k-NN accuracy), genes "
                          "(simulated-network community silhouette), training seconds."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
