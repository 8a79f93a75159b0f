"""Training speed side by side with scvi-tools, same cells, same machine, one run.

Our VAE (NB), LDVAE and siVAE (gaussian and NB) against scvi-tools' SCVI and LinearSCVI (NB) at
matched sizes: K latent dimensions, encoder hidden widths ``--hidden`` for ours and
``n_hidden=<last width>, n_layers=<number of widths>`` for scvi-tools (whose layers all share one
width), batch 128, a fixed number of epochs (no early stopping), on the training cells of one
pbmc3k split (2,000 HVG). Reported: whole-training seconds and seconds per epoch of the cell-wise
step (our three steps are timed whole too: siVAE trains three networks where a VAE trains one).
scvi-tools runs in its own virtualenv (/work/scvi-venv); its time is its ``train()`` call alone,
measured inside that process. Skipped with a printed note when it is absent.

    .venv/bin/python benchmarks/peers_speed.py --quick   # synthetic counts, ours only if no scvi, 2 epochs
    .venv/bin/python benchmarks/peers_speed.py           # pbmc3k, 20 epochs, every model
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _common import (ScviEmbedder, add_arguments, add_scvi_argument, claim, command_line, fill_defaults, folds,
                     out_dir, preprocessed_fold, synthetic_counts, verdict, without_missing_scvi, write_result)

MODELS = ("VAE-NB", "LDVAE", "siVAE", "siVAE-NB", "scvi SCVI", "scvi LinearSCVI")


def ours(name: str, train: Any, args: argparse.Namespace) -> dict[str, Any]:
    import sivae

    kwargs: dict[str, Any] = dict(n_latent=args.latent, encoder_hidden=tuple(args.hidden), batch_size=128,
                                  patience=10**6)  # a patience beyond the epochs: no early stop
    cls = {"VAE-NB": sivae.VAE, "LDVAE": sivae.LDVAE, "siVAE": sivae.SIVAE, "siVAE-NB": sivae.SIVAE}[name]
    if name in ("VAE-NB", "siVAE-NB"):
        kwargs["likelihood"] = "nb"
    model = cls(train.copy(), **kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=args.epochs, pretrain_epochs=args.epochs, progress=False)
    total = time.perf_counter() - t0
    cell = [h["seconds"] for h in model.history if h["phase"] == "cell"]
    return {"train_seconds": total, "epochs_run": len(model.history),
            "cell_step_seconds_per_epoch": sum(cell) / max(len(cell), 1)}


def peer(name: str, train: Any, test: Any, args: argparse.Namespace) -> dict[str, Any]:
    embed = ScviEmbedder(name.split()[1], args.latent, 0, args)
    embed(train, test)
    return {"train_seconds": embed.last_seconds, "epochs_run": embed.last_epochs,
            "cell_step_seconds_per_epoch": embed.last_seconds / max(embed.last_epochs, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every step (default 20; quick 2)")
    parser.add_argument("--hidden", nargs="+", type=int, default=None, help="encoder widths (default 128 128)")
    parser.add_argument("--data", choices=("pbmc3k", "synthetic"), default=None)
    add_scvi_argument(parser)
    args = parser.parse_args(argv)
    if args.quick and args.models is None:
        print("note: --quick leaves scvi-tools out (its start alone takes longer than the quick run); "
              "pass --models to include it")
    fill_defaults(args, quick={"models": ["LDVAE", "siVAE"], "epochs": 2, "hidden": [32, 32], "data": "synthetic"},
                  full={"models": list(MODELS), "epochs": 20, "hidden": [128, 128], "data": "pbmc3k"})
    args.fixed_epochs = True  # read by ScviEmbedder: no early stopping in scvi-tools either
    import sivae

    models, note = without_missing_scvi(list(args.models), args.scvi_python)
    folder = out_dir(args)
    t0 = time.perf_counter()
    adata = synthetic_counts() if args.data == "synthetic" else sivae.datasets.pbmc3k()
    tr, te = folds(adata.obs["cell_type"], 5, 1, seed=0)[0]
    train, test = preprocessed_fold(adata, tr, te, preprocess_mode="counts", n_top_genes=2000)
    import torch

    # one thread for every model (scvi-tools' child too), set after preprocessing: scanpy's numba
    # kernels reset the OpenMP pool to every core, and oversubscribed threads made our epochs
    # look up to 8x slower under load in an earlier run
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # read by scvi-tools' child process
    table = []
    for name in models:
        result = peer(name, train, test, args) if name.startswith("scvi ") else ours(name, train, args)
        table.append({"model": name, "cells": train.n_obs, "genes": train.n_vars, "K": args.latent, **result})
        print(f"{name:16s} {result['train_seconds']:7.1f} s for {result['epochs_run']} epochs "
              f"({result['cell_step_seconds_per_epoch']:.2f} s per cell-step epoch)", flush=True)
    times = {r["model"]: r["cell_step_seconds_per_epoch"] for r in table}
    claims = []
    for a, b in (("VAE-NB", "scvi SCVI"), ("LDVAE", "scvi LinearSCVI")):
        if a in times and b in times:
            ratio = times[a] / times[b]
            claims.append(claim(f"our {a} trains an epoch no slower than scvi-tools' {b.split()[1]}",
                                "none (our measurement; the paper gives no timings against scvi-tools)",
                                f"{times[a]:.2f} s vs {times[b]:.2f} s per epoch (ratio {ratio:.2f})",
                                verdict(ratio <= 1.0)))
    payload = {"benchmark": "peers_speed", "paper": "none", "command": command_line(), "quick": bool(args.quick),
               "seconds": time.perf_counter() - t0, "table": table, "claims": claims, "skipped": note,
               "settings": {k: getattr(args, k) for k in ("models", "latent", "epochs", "hidden", "data")},
               "summary": "Whole training time and seconds per epoch of the cell-wise step, every model on the same "
                          "training cells with a fixed number of epochs."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
