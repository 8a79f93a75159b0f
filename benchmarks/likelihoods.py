"""Held-out negative log-likelihood of the count models (paper Fig. S2) on pbmc3k's counts.

Models with a negative binomial output: siVAE-NB and LDVAE (ours), and scvi-tools' LinearSCVI and
SCVI (gene_likelihood="nb") when /work/scvi-venv has scvi-tools (skipped with a printed note
otherwise). Stratified k-fold cross-validation as in embedding_quality.py: the 2,000 HVG and the
z-score come from the training cells (``sivae.tl.split_fold``), every model trains on the
training cells only.

How the NLL is computed, the same formula for all: for each held-out cell c and HVG f,
-log NB(x_cf; mu_cf, theta_f) with ``sivae.nn.likelihoods.negative_binomial_nll`` (mean /
inverse-dispersion form, variance mu + mu^2/theta), where mu_cf = (observed total counts of c over
the HVG) x rho_cf; summed over the HVG and averaged over held-out cells ("NLL per cell", nats).
rho comes from the decoder: ours at the posterior mean of z; scvi-tools' as its
``get_likelihood_parameters(n_samples=25, give_mean=True)`` gives it (mu averaged over 25 posterior
samples of z; its API offers no posterior-mean decode). This is a plug-in reconstruction NLL, not
the marginal likelihood (no importance sampling): lower is better, comparable across models.

    .venv/bin/python benchmarks/likelihoods.py --quick    # synthetic counts, 2 folds, our two models
    .venv/bin/python benchmarks/likelihoods.py            # all 2,638 cells, 5 folds, K=10
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from _common import (ScviEmbedder, add_arguments, add_scvi_argument, claim, command_line, fill_defaults, folds,
                     mean_sd, out_dir, preprocessed_fold, subsample, synthetic_counts, verdict, without_missing_scvi,
                     write_result)

MODELS = ("siVAE-NB", "LDVAE", "scvi LinearSCVI", "scvi SCVI")


def nll_per_cell(counts: np.ndarray, rho_or_mu: np.ndarray, theta: np.ndarray, *, is_mu: bool) -> np.ndarray:
    """Summed NB NLL of each cell's counts; mu = observed library x rho unless ``is_mu``."""
    import torch

    from sivae.nn.likelihoods import negative_binomial_nll

    x = torch.as_tensor(counts, dtype=torch.float64)
    mu = torch.as_tensor(rho_or_mu, dtype=torch.float64)
    if not is_mu:
        mu = x.sum(1, keepdim=True) * mu
    theta_t = torch.as_tensor(theta, dtype=torch.float64)
    return negative_binomial_nll(x, mu, theta_t).sum(1).numpy()


def ours(model_class: Any, train: Any, test: Any, k_latent: int, seed: int, args: argparse.Namespace) -> np.ndarray:
    import torch

    kwargs = dict(n_latent=k_latent, seed=seed, encoder_hidden=tuple(args.hidden), batch_size=args.batch_size)
    if model_class.__name__ == "SIVAE":
        kwargs.update(likelihood="nb", c_red=args.c_red)
    model = model_class(train, **kwargs)
    model.train(max_epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, progress=False)
    module = model.module
    log_theta = module.log_theta if hasattr(module, "log_theta") else module.cell.log_theta
    with torch.no_grad():
        v_L = model.decoded_features()  # (F, H) at the posterior means of v
        idx = torch.arange(v_L.shape[0])
        x = torch.as_tensor(np.asarray(test.X), dtype=torch.float32)
        rho = module.predict(x, v_L, idx).numpy()  # (cells, F) at the posterior means of z
    return nll_per_cell(dense_counts(test), rho, log_theta.detach().exp().numpy(), is_mu=False)


def peer(kind: str, train: Any, test: Any, k_latent: int, seed: int, args: argparse.Namespace) -> np.ndarray:
    embed = ScviEmbedder(kind, k_latent, seed, args)
    embed(train, test)
    mu, theta = embed.last_params
    return nll_per_cell(dense_counts(test), mu, theta, is_mu=True)


def dense_counts(adata: Any) -> np.ndarray:
    """The raw counts the fold kept in ``layers["counts"]``, as a dense array."""
    from sivae import KEYS

    counts = adata.layers[KEYS.COUNTS]
    return counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)


def run(args: argparse.Namespace, models: list[str]) -> list[dict[str, Any]]:
    import sivae

    adata = synthetic_counts() if args.data == "synthetic" else subsample(sivae.datasets.pbmc3k(), args.max_cells, 0)
    rows = []
    for seed in range(args.seeds):
        for fold, (tr, te) in enumerate(folds(adata.obs["cell_type"], args.folds, args.use_folds, seed=seed)):
            train, test = preprocessed_fold(adata, tr, te, preprocess_mode="counts", n_top_genes=2000)
            for name in models:
                t0 = time.perf_counter()
                if name.startswith("scvi "):
                    nll = peer(name.split()[1], train, test, args.latent, seed, args)
                else:
                    nll = ours(sivae.SIVAE if name == "siVAE-NB" else sivae.LDVAE, train, test, args.latent, seed, args)
                rows.append({"data": args.data, "model": name, "K": args.latent, "seed": seed, "fold": fold, "cells": adata.n_obs,
                             "genes": train.n_vars, "nll_per_cell": float(nll.mean()),
                             "seconds": time.perf_counter() - t0})
                print(f"seed {seed} fold {fold} {name}: held-out NLL per cell {nll.mean():.1f}", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for model, part in frame.groupby("model", sort=False):
        mean, sd = mean_sd(part["nll_per_cell"])
        out.append({"data": str(part["data"].iloc[0]), "model": model, "K": int(part["K"].iloc[0]), "cells": int(part["cells"].iloc[0]),
                    "genes": int(part["genes"].iloc[0]), "fits": len(part),
                    "nll_per_cell_mean": mean, "nll_per_cell_sd": sd,
                    "seconds_per_fit": float(part["seconds"].mean())})
    return out


def claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    nll = {r["model"]: r["nll_per_cell_mean"] for r in table}
    out = []
    for better, worse, text in (("siVAE-NB", "LDVAE", "siVAE-NB fits held-out counts at least as well as LDVAE"),
                                 ("siVAE-NB", "scvi LinearSCVI", "siVAE-NB fits held-out counts at least as well as "
                                  "scvi-tools' LinearSCVI"),
                                 ("scvi SCVI", "scvi LinearSCVI", "a non-linear decoder (SCVI) fits better than a "
                                  "linear one (LinearSCVI)")):
        ran = better in nll and worse in nll
        ours_text = (f"NLL per cell {nll[better]:.1f} ({better}) vs {nll[worse]:.1f} ({worse})" if ran
                     else f"{better} or {worse} not run")
        out.append(claim(text, "Fig. S2: NLL bars of the NB models (no numbers in the text)", ours_text,
                         verdict(nll[better] <= nll[worse] if ran else None)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--latent", type=int, default=10, help="K (default 10)")
    parser.add_argument("--folds", type=int, default=None, help="folds (default 5; quick 2)")
    parser.add_argument("--use-folds", type=int, default=None, help="how many of the folds to train on (default all)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="joint-step epochs (default 100; quick 3)")
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--max-cells", type=int, default=None, help="stratified subsample (quick 300)")
    parser.add_argument("--hidden", nargs="+", type=int, default=None, help="encoder widths (default 256 64)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--c-red", type=int, default=100)
    add_scvi_argument(parser)
    parser.add_argument("--data", choices=("pbmc3k", "synthetic"), default=None,
                        help="pbmc3k (default), or synthetic NB counts (quick: loading pbmc3k alone takes ~10 s)")
    args = parser.parse_args(argv)
    quick = {"data": "synthetic", "models": ["siVAE-NB", "LDVAE"], "folds": 2, "use_folds": 1, "epochs": 3,
             "pretrain_epochs": 2, "max_cells": 300, "hidden": [32, 16]}
    full = {"data": "pbmc3k", "models": list(MODELS), "folds": 5, "use_folds": None, "epochs": 100,
            "pretrain_epochs": None, "max_cells": None, "hidden": [256, 64]}
    fill_defaults(args, quick, full)
    models, note = without_missing_scvi(list(args.models), args.scvi_python)
    folder = out_dir(args)
    t0 = time.perf_counter()
    rows = run(args, models)
    table = summarise(rows)
    payload = {"benchmark": "likelihoods", "paper": "Fig. S2", "command": command_line(), "quick": bool(args.quick),
               "seconds": time.perf_counter() - t0, "table": table, "claims": claims(table), "runs": rows,
               "skipped": note,
               "settings": {k: getattr(args, k) for k in ("data", "models", "latent", "folds", "use_folds", "seeds", "epochs",
                                                           "pretrain_epochs", "max_cells", "hidden", "batch_size")},
               "summary": "Held-out NB negative log-likelihood per cell (nats, summed over the 2,000 HVG of each "
                          "training fold; lower is better): mu = observed library x the decoder's rho, "
                          "the same formula for every model (see the script's docstring)."}
    for row in table:
        print(f"{row['model']:16s} NLL per cell {row['nll_per_cell_mean']:.1f} +- {row['nll_per_cell_sd']:.1f}")
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
