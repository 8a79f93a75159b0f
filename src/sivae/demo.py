"""A few-minute tour on offline data: gene hubs on a simulated network, cell types on PBMCs.

``python -m sivae demo`` (or :func:`run_demo`) trains two siVAE models on a CPU, writes their
AnnData files and figures, and prints what the paper's Fig. 4-5 claim, measured on this run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from sivae import pl
from sivae._constants import FILES, KEYS
from sivae._errors import InputError
from sivae._files import check_destination
from sivae.tl import hubs, hubs_in_top, isolated_norm_ratio, knn_accuracy, loading_silhouette

# K=8: room for the five communities' programmes, so hubs stand out (K=2 finds about half).
NETWORK_LATENT = 8
PBMC_LATENT = 2
# Chosen so the demo finishes in a few minutes on 2 CPU cores; `epochs` overrides both.
NETWORK_EPOCHS = 30
PBMC_EPOCHS = 150
TOP = 10  # hubs are sought among this many most central genes
NETWORK_CELLS = 5000  # the paper's size (Methods: simulated network)
MODEL_OPTIONS: dict[str, Any] = {}  # further SIVAE arguments for both models; defaults when empty

_FILES = {
    "network_h5ad": FILES.DEMO_NETWORK_H5AD,
    "pbmc_h5ad": FILES.DEMO_PBMC_H5AD,
    "pbmc_cells_png": FILES.DEMO_PBMC_CELLS_PNG,
    "pbmc_features_png": FILES.DEMO_PBMC_FEATURES_PNG,
    "network_features_png": FILES.DEMO_NETWORK_FEATURES_PNG,
    "network_centrality_png": FILES.DEMO_NETWORK_CENTRALITY_PNG,
}


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train siVAE on two offline datasets, save results and figures, print a summary table.

    Trains ``SIVAE(n_latent=8)`` on ``sivae.datasets.simulated_network()`` (5 communities of 50
    genes around one hub each, 50 isolated genes) and ``SIVAE(n_latent=2)`` on
    ``sivae.datasets.pbmc68k_reduced()`` (700 PBMCs, 10 cell types).

    Parameters
    ----------
    out_dir
        Folder for the outputs (created if missing): ``simulated_network.h5ad``,
        ``pbmc68k_reduced.h5ad`` (each with ``obsm["X_sivae"]``, ``varm["sivae_loadings"]``,
        ``var["sivae_centrality"]``, ``uns["sivae"]``) and four PNG figures.
    epochs
        Joint-training epochs of both models; None picks a few-minute budget
        (``NETWORK_EPOCHS``, ``PBMC_EPOCHS``).
    force
        Overwrite outputs already in ``out_dir``; without it they are refused before training.
    progress
        Show training progress bars.

    Returns
    -------
    dict
        ``top_genes`` (five most central genes: name, centrality, planted hub or not),
        ``hubs_in_top10`` (planted hubs among the 10 most central genes), ``n_hubs``,
        ``loading_silhouette`` (of the five communities in the loading space),
        ``isolated_norm_ratio`` (mean loading norm of isolated over community genes),
        ``knn_accuracy`` (15-NN, 5-fold, PBMC cell types in the 2-D embedding) and
        ``knn_accuracy_pca`` (the same on 2 principal components), ``epochs``, ``seconds``
        and ``files`` (name -> path written).
    """
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise InputError(f"epochs must be a positive integer; got {epochs!r}")
    out = Path(out_dir)
    paths = {key: out / name for key, name in _FILES.items()}
    _check_outputs(out, list(paths.values()), force)
    out.mkdir(parents=True, exist_ok=True)

    n_epochs = {"simulated_network": epochs or NETWORK_EPOCHS,
                "pbmc68k_reduced": epochs or PBMC_EPOCHS}
    t0 = time.perf_counter()
    _say(f"training siVAE (K={NETWORK_LATENT}) on a simulated gene network, {NETWORK_CELLS} cells "
         "x 300 genes", progress)
    network = _fit_network(n_epochs["simulated_network"], progress)
    t1 = time.perf_counter()
    _say(f"training siVAE (K={PBMC_LATENT}) on pbmc68k_reduced, 700 cells x 765 genes", progress)
    pbmc = _fit_pbmc(n_epochs["pbmc68k_reduced"], progress)
    t2 = time.perf_counter()

    metrics = {**_network_metrics(network), **_pbmc_metrics(pbmc)}
    metrics["epochs"] = n_epochs
    metrics["seconds"] = {"simulated_network": round(t1 - t0, 1),
                          "pbmc68k_reduced": round(t2 - t1, 1)}
    _write(network, pbmc, paths, force)
    metrics["files"] = {key: str(path) for key, path in paths.items()}
    print(format_table(metrics))
    return metrics


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _check_outputs(out: Path, paths: list[Path], force: bool) -> None:
    # refuse before any training, so a refused run costs nothing and leaves nothing half-done
    if out.exists() and not out.is_dir():
        raise InputError(f"{str(out)!r} exists and is not a folder; choose another --out")
    existing = [p.name for p in paths if p.exists()]
    if existing and not force:
        raise InputError(f"{str(out)!r} already holds {', '.join(existing)}; pass --force to overwrite")
    for path in paths:
        check_destination(path, what="--out file", overwrite=force)


def _fit_network(epochs: int, progress: bool) -> AnnData:
    from sivae import SIVAE, datasets

    adata = datasets.simulated_network(n_cells=NETWORK_CELLS)
    model = SIVAE(adata, n_latent=NETWORK_LATENT, **MODEL_OPTIONS)
    model.train(max_epochs=epochs, progress=progress)
    return adata


def _fit_pbmc(epochs: int, progress: bool) -> AnnData:
    from sivae import SIVAE, datasets

    adata = datasets.pbmc68k_reduced()
    model = SIVAE(adata, n_latent=PBMC_LATENT, **MODEL_OPTIONS)
    model.train(max_epochs=epochs, progress=progress)
    return adata


def _network_metrics(adata: AnnData) -> dict[str, Any]:
    var = adata.var
    is_hub = var[KEYS.IS_HUB].to_numpy(dtype=bool)
    is_isolated = var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    loadings = np.asarray(adata.varm[KEYS.LOADINGS])
    top = hubs(adata, n=5)
    return {
        "top_genes": [
            {"gene": str(g), "centrality": float(c), "is_hub": bool(var.loc[g, KEYS.IS_HUB])}
            for g, c in top.items()
        ],
        f"hubs_in_top{TOP}": hubs_in_top(var[KEYS.CENTRALITY], is_hub, top=TOP),
        "n_hubs": int(is_hub.sum()),
        # communities only: the isolated genes are a point at the origin, not a community
        "loading_silhouette": loading_silhouette(
            loadings[~is_isolated], var[KEYS.COMMUNITY].to_numpy()[~is_isolated]
        ),
        "isolated_norm_ratio": isolated_norm_ratio(loadings, is_isolated),
    }


def _pbmc_metrics(adata: AnnData) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    labels = adata.obs[KEYS.CELL_TYPE]
    pca = PCA(n_components=PBMC_LATENT, random_state=0).fit_transform(np.asarray(adata.X))
    return {
        "knn_accuracy": knn_accuracy(adata.obsm[KEYS.CELL_EMBEDDING], labels),
        "knn_accuracy_pca": knn_accuracy(pca, labels),
    }


def _write(network: AnnData, pbmc: AnnData, paths: dict[str, Path], force: bool) -> None:
    from sivae.data.io import write_h5ad

    pl.feature_embedding(network, color=KEYS.COMMUNITY, highlight=KEYS.IS_HUB,
                           path=paths["network_features_png"])
    pl.centrality(network, color=KEYS.COMMUNITY, highlight=KEYS.IS_HUB,
                    path=paths["network_centrality_png"])
    pl.cell_embedding(pbmc, color=KEYS.CELL_TYPE, path=paths["pbmc_cells_png"])
    pl.feature_embedding(pbmc, path=paths["pbmc_features_png"])
    write_h5ad(network, paths["network_h5ad"], force=force)
    write_h5ad(pbmc, paths["pbmc_h5ad"], force=force)


def format_table(metrics: dict[str, Any]) -> str:
    """The demo's summary as plain text: top genes, then one line per score.

    Parameters
    ----------
    metrics
        The dict returned by :func:`run_demo`.

    Returns
    -------
    str
        A small fixed-width table.
    """
    lines = ["simulated network (siVAE, K=8): five most central genes",
             f"  {'gene':<12}{'centrality':>12}  planted hub"]
    for row in metrics["top_genes"]:
        hub = "yes" if row["is_hub"] else "no"
        lines.append(f"  {row['gene']:<12}{row['centrality']:>12.3f}  {hub}")
    n_hubs = metrics["n_hubs"]
    rows = [
        (f"planted hubs among the {TOP} most central genes",
         f"{metrics[f'hubs_in_top{TOP}']} / {n_hubs}"),
        ("loading silhouette of the 5 communities", f"{metrics['loading_silhouette']:.3f}"),
        ("loading norm, isolated / community genes", f"{metrics['isolated_norm_ratio']:.3f}"),
        ("PBMC 15-NN accuracy, siVAE 2-D embedding", f"{metrics['knn_accuracy']:.3f}"),
        ("PBMC 15-NN accuracy, PCA 2-D (reference)", f"{metrics['knn_accuracy_pca']:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines.append("")
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
