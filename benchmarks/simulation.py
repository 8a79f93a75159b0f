"""The simulated gene network (paper Fig. 4b, Fig. S5, Fig. S6): how siVAE's feature embedding is organised.

Data: ``sivae.datasets.simulated_network`` (the paper's Methods: five hub-and-spoke communities of
50 genes, edge weight 0.6, plus 50 isolated genes; 5,000 cells). siVAE is trained with gamma 0.05
and 0 (the interpretability term on and off), at K=2 (the paper's pictures) and K=8 (room for the
five programmes: DESIGN.md), over several seeds. Measured per fit, from the loadings
``varm["sivae_loadings"]`` and centrality ``var["sivae_centrality"]``:

- community silhouette of the loadings (the five communities; isolated genes left out),
- mean loading norm of isolated genes over community genes (near 0: isolated genes at the origin),
- planted hubs among the 5 and 10 most central genes (best reconstructed: Fig. S5b).

siVAE trains as shipped (``--pretraining finetune``: a VAE's run, then the feature side fit to
it) unless ``--pretraining paper`` asks for the paper's three steps.

Figure (as Fig. S6): feature embeddings at gamma 0.05 and 0, coloured by community (top) and by
reconstruction error (bottom).

    .venv/bin/python benchmarks/simulation.py --quick    # 1,000 cells, few epochs, one seed
    .venv/bin/python benchmarks/simulation.py            # 5,000 cells, 3 seeds (about 30 min on 2 cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import add_arguments, claim, command_line, fill_defaults, out_dir, save_figure, verdict, write_result

from sivae.train.modes import TRAINING_MODES

GAMMAS = (0.05, 0.0)
_DATA: dict[tuple[int, int], Any] = {}
RECON_ERROR = "reconstruction_error"  # var column of this script's figure only: 1 - centrality


def fit(n_cells: int, gamma: float, k_latent: int, seed: int, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import sivae
    from sivae import KEYS
    from sivae.tl import hubs_in_top, isolated_norm_ratio, loading_silhouette

    if (n_cells, seed) not in _DATA:  # the network's covariance takes seconds to build: once per seed
        _DATA[(n_cells, seed)] = sivae.datasets.simulated_network(n_cells=n_cells, seed=seed)
    adata = _DATA[(n_cells, seed)].copy()
    model = sivae.SIVAE(adata, n_latent=k_latent, gamma=gamma, seed=seed, encoder_hidden=tuple(args.hidden))
    t0 = time.perf_counter()
    model.train(max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, pretraining=args.pretraining,
                progress=False)
    var, loadings = adata.var, adata.varm[KEYS.LOADINGS]
    isolated = var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    row = {"gamma": gamma, "K": k_latent, "seed": seed, "cells": n_cells, "pretraining": args.pretraining,
           "community_silhouette": loading_silhouette(loadings[~isolated], var[KEYS.COMMUNITY].to_numpy()[~isolated]),
           "isolated_norm_ratio": isolated_norm_ratio(loadings, isolated),
           "hubs_in_top5": hubs_in_top(var[KEYS.CENTRALITY], var[KEYS.IS_HUB], top=5),
           "hubs_in_top10": hubs_in_top(var[KEYS.CENTRALITY], var[KEYS.IS_HUB], top=10),
           "n_hubs": int(var[KEYS.IS_HUB].sum()), "epochs_run": len(model.history),
           "seconds": time.perf_counter() - t0}
    adata.var[RECON_ERROR] = 1.0 - var[KEYS.CENTRALITY]
    return adata, row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (gamma, K)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (gamma, k_latent), part in frame.groupby(["gamma", "K"], sort=False):
        entry: dict[str, Any] = {"gamma": float(gamma), "K": int(k_latent), "seeds": len(part)}
        for metric in ("community_silhouette", "isolated_norm_ratio", "hubs_in_top5", "hubs_in_top10"):
            entry[f"{metric}_mean"] = float(part[metric].mean())
            entry[f"{metric}_min"] = float(part[metric].min())
            entry[f"{metric}_max"] = float(part[metric].max())
        entry["seconds_per_fit"] = float(part["seconds"].mean())
        out.append(entry)
    return out


def claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's statements about the simulated network, each checked against the measured means."""
    by = {(r["gamma"], r["K"]): r for r in table}
    out = []

    def add(text: str, paper: str, key: tuple[float, int], ours: str, ok: bool | None, partly: bool = False) -> None:
        out.append(claim(text, paper, ours if key in by else "not run", verdict(ok, partly)))

    for k_latent in sorted({r["K"] for r in table}):
        on, off = by.get((0.05, k_latent)), by.get((0.0, k_latent))
        if on:
            sil = on["community_silhouette_mean"]
            add(f"genes of a community co-localise in the feature embedding (K={k_latent})",
                "Fig. 4b: five tight community clusters", (0.05, k_latent),
                f"community silhouette {sil:.2f} (min {on['community_silhouette_min']:.2f} over seeds)",
                sil > 0.25, partly=sil > 0.1)
            ratio = on["isolated_norm_ratio_mean"]
            add(f"isolated genes sit near the origin with gamma=0.05 (K={k_latent})",
                "Fig. 4b: isolated genes clustered tightly at the origin", (0.05, k_latent),
                f"isolated/community loading norm {ratio:.2f}", ratio < 0.35, partly=ratio < 0.6)
            hubs = on["hubs_in_top5_mean"]
            add(f"the planted hubs are the best-reconstructed genes (K={k_latent})",
                "Fig. S5b: hubs have the lowest reconstruction loss", (0.05, k_latent),
                f"{hubs:.1f} of 5 hubs among the 5 most central genes (mean over seeds)",
                hubs >= 4.5, partly=hubs >= 2)
        if on and off:
            a, b = on["isolated_norm_ratio_mean"], off["isolated_norm_ratio_mean"]
            add(f"the interpretability term pulls isolated genes to the origin (K={k_latent})",
                "Fig. S6: isolated genes at the origin with gamma=0.05, not with gamma=0", (0.05, k_latent),
                f"isolated/community norm {a:.2f} with gamma=0.05 vs {b:.2f} with gamma=0", a < 0.75 * b,
                partly=a < b)
    return out


def figure(fits: dict[float, Any], path: Path) -> Path:
    """Fig. S6: loadings at each gamma, coloured by community (top) and reconstruction error (bottom)."""
    from matplotlib.figure import Figure

    import sivae
    from sivae import KEYS

    fig = Figure(figsize=(5.2 * len(fits), 9.0))
    for i, (gamma, adata) in enumerate(fits.items()):
        top = fig.add_subplot(2, len(fits), i + 1)
        sivae.pl.feature_embedding(adata, color=KEYS.COMMUNITY, highlight=KEYS.IS_HUB, ax=top)
        top.set_title(f"gamma = {gamma}: coloured by community")
        bottom = fig.add_subplot(2, len(fits), len(fits) + i + 1)
        sivae.pl.feature_embedding(adata, color=RECON_ERROR, highlight=KEYS.IS_HUB, ax=bottom)
        bottom.set_title(f"gamma = {gamma}: coloured by reconstruction error")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--cells", type=int, default=None, help="simulated cells (default 5,000; quick 1,000)")
    parser.add_argument("--latent", nargs="+", type=int, default=None, help="K values (default 2 8; quick 2)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 3; quick 1)")
    parser.add_argument("--epochs", type=int, default=None, help="joint-step epochs (default 60; quick 4)")
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--hidden", nargs="+", type=int, default=None, help="encoder widths (default 512 128)")
    parser.add_argument("--pretraining", choices=tuple(TRAINING_MODES), default="finetune",
                        help="siVAE's training procedure (default finetune, as shipped)")
    args = parser.parse_args(argv)
    fill_defaults(args, quick={"cells": 1000, "latent": [2], "seeds": 1, "epochs": 4, "pretrain_epochs": 2,
                               "hidden": [64, 32]},
                  full={"cells": 5000, "latent": [2, 8], "seeds": 3, "epochs": 100, "pretrain_epochs": None,
                        "hidden": [512, 128]})
    folder = out_dir(args)
    t0 = time.perf_counter()
    rows, pictures = [], {}
    for k_latent in args.latent:
        for gamma in GAMMAS:
            for seed in range(args.seeds):
                adata, row = fit(args.cells, gamma, k_latent, seed, args)
                rows.append(row)
                if k_latent == min(args.latent) and seed == 0:
                    pictures[gamma] = adata
                print(f"gamma={gamma} K={k_latent} seed={seed}: silhouette {row['community_silhouette']:.3f}, "
                      f"isolated/community norm {row['isolated_norm_ratio']:.3f}, hubs in top 5 "
                      f"{row['hubs_in_top5']}/5 ({row['seconds']:.0f} s)", flush=True)
    table = summarise(rows)
    png = figure(pictures, folder / "simulation_features.png")
    payload = {"benchmark": "simulation", "paper": "Fig. 4b, Fig. S5, Fig. S6", "command": command_line(),
               "quick": bool(args.quick), "seconds": time.perf_counter() - t0, "table": table,
               "claims": claims(table), "runs": rows, "figures": [png.name],
               "settings": {k: getattr(args, k) for k in ("cells", "latent", "seeds", "epochs", "pretrain_epochs", "hidden",
                                                             "pretraining")},
               "summary": "siVAE on the simulated network; mean (min-max) over seeds per gamma and K."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
