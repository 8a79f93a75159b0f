"""The ``sivae`` command: ``fit`` a model to a file, ``embed`` new cells with it, run the ``demo``,
``simulate-large`` a sparse count matrix for scale tests.

Bad input ends the command with one line, ``sivae: error: <sentence>``, and exit status 2; output
paths are checked before any training, so a refused run has done nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sivae._constants import FILES, KEYS
from sivae._errors import InputError

from ._args import (
    _check_input,
    _check_output,
    _check_writable,
    _hidden,
    _non_negative_float,
    _positive_float,
    _positive_int,
    _top_genes,
)

_EXIT_BAD_INPUT = 2
# errors that mean "the input or a path is wrong": one line, no traceback
_BAD_INPUT = (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sivae`` command line.

    Parameters
    ----------
    argv
        Arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad arguments or bad input, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed usage and its one-line error (or --help)
        return stop.code if isinstance(stop.code, int) else _EXIT_BAD_INPUT
    try:
        return args.run(args)
    except _BAD_INPUT as err:
        print(f"sivae: error: {_sentence(err)}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sivae: interrupted; outputs are only ever written whole, so none is half-written",
              file=sys.stderr)
        return _EXIT_INTERRUPTED


def _sentence(err: BaseException) -> str:
    # one line, whatever the exception carries
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.strerror or type(err).__name__}: {os.fsdecode(err.filename)!r}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


# -- arguments ------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sivae",
        description="siVAE: interpretable cell and feature embeddings for single-cell data.",
    )
    from sivae import __version__

    parser.add_argument("--version", action="version", version=f"sivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{fit,embed,demo,simulate-large}")
    _add_fit(sub)
    _add_embed(sub)
    _add_demo(sub)
    _add_simulate_large(sub)
    return parser


def _add_fit(sub: Any) -> None:
    p = sub.add_parser(
        "fit", help="preprocess a cells x features file, train siVAE, write the result",
        description="Read IN, preprocess it (unless --no-preprocess), train siVAE and write an "
        "h5ad with obsm['X_sivae'], varm['sivae_loadings'], var['sivae_centrality'], uns['sivae'].",
    )
    p.add_argument("input", metavar="IN", help=".h5ad, 10x .h5, 10x mtx folder, .csv/.tsv or .loom")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="h5ad file to write")
    p.add_argument("--model-dir", metavar="DIR", help="also save the trained model to this folder")
    p.add_argument("--n-latent", type=_positive_int, default=2, metavar="K",
                   help="size of both embeddings (default 2)")
    p.add_argument("--gamma", type=_non_negative_float, default=0.05, metavar="G",
                   help="weight of the interpretability term; 0 turns it off (default 0.05)")
    p.add_argument("--likelihood", choices=("gaussian", "nb"), default="gaussian",
                   help="gaussian on scaled data, or nb on raw counts")
    p.add_argument("--linear", action="store_true", help="siVAE-linear: linear decoders")
    p.add_argument("--hidden", type=_hidden, metavar="W1,W2,...",
                   help="encoder widths (default 1024,512,128); the decoder mirrors them")
    p.add_argument("--c-red", type=_positive_int, metavar="N", help="values per feature fed to "
                   "the feature-wise encoder (default 100)")
    p.add_argument("--epochs", type=_positive_int, default=200, metavar="N",
                   help="joint-training epochs (default 200)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="cells per step (default 256)")
    p.add_argument("--learning-rate", type=_positive_float, metavar="LR",
                   help="Adam's rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--n-top-genes", type=_top_genes, default=2000, metavar="N|all",
                   help="highly variable features kept by preprocessing (default 2000; all: "
                   "every non-constant feature)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="IN is already normalised and z-scored: use adata.X as it is (with "
                   "--backed: normalised and log-transformed, z-scored per batch)")
    p.add_argument("--backed", action="store_true",
                   help="leave IN's matrix on disk (an .h5ad with CSR X) and read minibatches of "
                   "cells from it: memory does not grow with the cells; OUT then holds the "
                   "results and annotations without a copy of the matrix")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="write a checkpoint here while training")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--force", action="store_true", help="overwrite OUT and --model-dir")
    p.set_defaults(run=_fit)


def _add_embed(sub: Any) -> None:
    p = sub.add_parser(
        "embed", help="embed new cells with a saved model",
        description="Load the model in MODEL_DIR, embed the cells of IN (preprocessed like the "
        "training data unless --no-preprocess) and write them with the embedding in obsm.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="folder from `sivae fit --model-dir`")
    p.add_argument("input", metavar="IN", help="cells measured on the model's features")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="h5ad file to write")
    p.add_argument("--no-preprocess", action="store_true",
                   help="IN is already normalised and z-scored like the training data")
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(run=_embed)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="a few-minute tour on offline data (hubs; PBMC cell types)",
        description="Train siVAE on a simulated gene network and on 700 PBMCs, write h5ad files "
        "and figures, and print the hub and embedding scores.",
    )
    p.add_argument("--out", default="sivae_demo", metavar="DIR", help="output folder")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="training epochs of both models (default: a few minutes' worth)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--force", action="store_true", help="overwrite outputs in DIR")
    p.set_defaults(run=_demo)


def _add_simulate_large(sub: Any) -> None:
    p = sub.add_parser(
        "simulate-large", help="write a large sparse count matrix with planted cell types",
        description="Write an h5ad with a CSR count matrix of N cells x F features, generated and "
        f"written in chunks of cells (never whole in memory); obs[{KEYS.CELL_TYPE!r}] holds the "
        f"planted types and var[{KEYS.PROGRAM!r}] the type whose program up-regulates each gene.",
    )
    p.add_argument("--cells", type=_positive_int, required=True, metavar="N", help="cells")
    p.add_argument("--features", type=_positive_int, required=True, metavar="F", help="features")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="h5ad file to write")
    p.add_argument("--programs", type=_positive_int, default=10, metavar="T",
                   help="cell types, each with its own block of up-regulated genes (default 10)")
    p.add_argument("--density", type=_positive_float, default=0.05, metavar="D",
                   help="expected fraction of non-zero counts, at most 0.5 (default 0.05)")
    p.add_argument("--chunk-cells", type=_positive_int, default=10_000, metavar="N",
                   help="cells generated and written per step (default 10000)")
    p.add_argument("--compression", choices=("gzip", "lzf"),
                   help="compress the matrix (default: none, the fastest to read back)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(run=_simulate_large)


# -- commands -------------------------------------------------------------------------------------
def _fit(args: argparse.Namespace) -> int:
    from sivae import SIVAE
    from sivae.data.io import write_h5ad

    source = _check_input(args.input)
    out = _check_output(args.output, force=args.force, what="output", folder=False)
    model_dir = None
    if args.model_dir is not None:
        model_dir = _check_output(args.model_dir, force=args.force, what="--model-dir", folder=True)
    if args.resume and args.checkpoint_dir is None:
        raise InputError("--resume needs --checkpoint-dir, the folder holding the checkpoint")
    if args.checkpoint_dir is not None:
        checkpoints = Path(args.checkpoint_dir)
        if checkpoints.exists() and not checkpoints.is_dir():
            raise InputError(f"--checkpoint-dir {args.checkpoint_dir!r} exists and is not a folder")
        _check_writable(checkpoints / FILES.CHECKPOINT_META, "--checkpoint-dir")
    with _process_group(args.device) as rank:
        adata = _load(source, args, progress=not args.no_progress and rank == 0)
        model = SIVAE(adata, **_model_options(args))
        model.train(max_epochs=args.epochs, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                    progress=not args.no_progress)
    if rank != 0:
        return 0  # every rank holds the same model; rank 0 writes it
    write_h5ad(model.adata, out, force=args.force)
    if model_dir is not None:
        model_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
        model.save(model_dir, overwrite=args.force)
        _save_preprocessing(model.adata, model_dir, preprocessed=not args.no_preprocess)
    keys = model.keys
    saved = f"; model saved to {model_dir}" if model_dir is not None else ""
    print(f"wrote {out}: {adata.n_obs} cells x {adata.n_vars} features; obsm"
          f"[{keys.cell_embedding!r}], varm[{keys.loadings!r}], var[{keys.centrality!r}]{saved}")
    return 0


@contextmanager
def _process_group(device: str) -> Iterator[int]:
    """Join torchrun's process group when it started several of us; yields this process's rank."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world_size = int(text)
    except ValueError:
        raise InputError(f"the environment variable WORLD_SIZE is {text!r}, not a number of "
                         "processes; unset it, or launch several with torchrun") from None
    if world_size <= 1:
        yield 0
        return
    import torch
    import torch.distributed as dist

    from sivae.model import resolve_device

    if not dist.is_available():
        raise InputError(f"WORLD_SIZE is {world_size} but this torch build has no torch.distributed; "
                         "unset WORLD_SIZE to train in one process")
    dev = resolve_device(device)  # under torchrun, CUDA is GPU LOCAL_RANK
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    except (ValueError, RuntimeError) as err:  # e.g. WORLD_SIZE set by hand, no MASTER_ADDR
        raise InputError(f"WORLD_SIZE is {world_size} but the process group could not start "
                         f"({err}); launch with torchrun, or unset WORLD_SIZE to train in one "
                         "process") from err
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "n_latent": args.n_latent, "gamma": args.gamma, "likelihood": args.likelihood,
        "linear": args.linear, "seed": args.seed, "device": args.device,
    }
    if args.hidden is not None:
        options["encoder_hidden"] = args.hidden
        options["decoder_hidden"] = tuple(reversed(args.hidden))
    optional = {
        "c_red": args.c_red, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
    }
    options.update({key: value for key, value in optional.items() if value is not None})
    return options


def _load(source: Path, args: argparse.Namespace, *, progress: bool) -> Any:
    """IN as the model trains on it: read (or opened on disk with --backed) and preprocessed."""
    from sivae import pp, read, read_backed

    if not args.backed:
        adata = read(source)
        return adata if args.no_preprocess else _preprocess(adata, n_top_genes=args.n_top_genes)
    adata = read_backed(source)
    if args.no_preprocess:  # normalised values in a CSR file: only the z-score is left to do
        pp.scale_features(adata, progress=progress)
        return adata
    return _preprocess(adata, n_top_genes=args.n_top_genes, progress=progress)


def _preprocess(adata: Any, *, n_top_genes: int | None, progress: bool = True) -> Any:
    from sivae import pp

    try:
        result = pp.preprocess(adata, n_top_genes=n_top_genes, progress=progress)
    except InputError as err:  # point command-line users to the flag, not the Python function
        hint = "pass --no-preprocess (z-score them per feature first)"
        raise InputError(str(err).replace("use sivae.pp.scale_features instead", hint)) from err
    return adata if result is None else result


def _save_preprocessing(adata: Any, model_dir: Path, *, preprocessed: bool) -> None:
    """Record beside the model how its training cells were preprocessed, for `sivae embed`."""
    record: dict[str, Any] = {"preprocessed": preprocessed}
    if preprocessed:
        info = adata.uns[KEYS.PREPROCESS]
        record.update(
            target_sum=float(info["target_sum"]), max_value=info["max_value"],
            features=[str(f) for f in adata.var_names],
            feature_mean=[float(v) for v in adata.var[KEYS.FEATURE_MEAN]],
            feature_std=[float(v) for v in adata.var[KEYS.FEATURE_STD]],
        )
    path = model_dir / FILES.PREPROCESS
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _embed(args: argparse.Namespace) -> int:
    from sivae import load_model, read
    from sivae.data.io import write_h5ad
    from sivae.model import read_model_files

    model_path = Path(args.model_dir)
    if not model_path.is_dir():
        raise InputError(f"model folder {args.model_dir!r} does not exist; train one with "
                         "`sivae fit IN -o OUT.h5ad --model-dir DIR`")
    source = _check_input(args.input)
    out = _check_output(args.output, force=args.force, what="output", folder=False)
    meta, _ = read_model_files(model_path)
    record = None if args.no_preprocess else _read_preprocessing(model_path)
    adata = read(source)
    features = [str(name) for name in meta["feature_names"]]
    known = set(map(str, adata.var_names))
    missing = [name for name in features if name not in known]
    if missing:
        raise InputError(f"{len(missing)} of the model's {len(features)} features are missing "
                         f"from {args.input!r} (e.g. {missing[0]!r}); embed cells measured on them")
    cells = _prepare_cells(adata, features, record)
    model = load_model(model_path, cells, device=args.device)
    cells.obsm[model.keys.cell_embedding] = model.get_cell_embedding()
    write_h5ad(cells, out, force=args.force)
    print(f"wrote {out}: {cells.n_obs} cells embedded in obsm[{model.keys.cell_embedding!r}]")
    return 0


def _read_preprocessing(model_dir: Path) -> dict[str, Any]:
    path = model_dir / FILES.PREPROCESS
    if not path.is_file():
        raise InputError(
            f"{str(model_dir)!r} has no {FILES.PREPROCESS} (it was not saved by `sivae fit`), so "
            "the training preprocessing is unknown; preprocess IN yourself and pass --no-preprocess"
        )
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise InputError(f"{str(path)!r} is corrupt ({err}); re-run `sivae fit`") from err
    needed = ("features", "feature_mean", "feature_std", "target_sum", "max_value")
    if not isinstance(record, dict) or "preprocessed" not in record or (
        record["preprocessed"] and any(key not in record for key in needed)
    ):
        raise InputError(f"{str(path)!r} is incomplete; re-run `sivae fit`")
    return record


def _prepare_cells(adata: Any, features: list[str], record: dict[str, Any] | None) -> Any:
    """The model's features of ``adata``, transformed as the training cells were."""
    import numpy as np
    import scipy.sparse as sp

    from sivae.data.transform import RowTransform
    from sivae.data.validate import check_counts, check_unique_names

    check_unique_names(adata)
    if record is None or not record["preprocessed"]:
        return adata[:, features].copy()
    position = {name: i for i, name in enumerate(record["features"])}
    if any(name not in position for name in features):
        raise InputError(f"{FILES.PREPROCESS} does not match the model's features; re-run fit")
    check_counts(adata.X, "adata.X", hint="`sivae embed` expects raw counts, as `sivae fit` did; "
                 "pass --no-preprocess for data already scaled like the training data")
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    order = [position[name] for name in features]
    # the training steps, per cell: normalise over all genes (as in fit), log1p, the model's
    # features, the stored z-score; the same transform backed training applies per batch
    transform = RowTransform(
        library_size=np.asarray(counts.sum(1)).ravel(), target_sum=record["target_sum"], log1p=True,
        columns=adata.var_names.get_indexer(features),
        mean=np.asarray(record["feature_mean"])[order], std=np.asarray(record["feature_std"])[order],
        max_value=record["max_value"],
    )
    cells = adata[:, features].copy()
    cells.layers[KEYS.COUNTS] = sp.csr_matrix(cells.X, dtype=np.float32)
    cells.X = transform.apply(counts, np.arange(adata.n_obs))
    return cells


def _demo(args: argparse.Namespace) -> int:
    from sivae.demo import run_demo

    run_demo(args.out, epochs=args.epochs, force=args.force, progress=not args.no_progress)
    return 0


def _simulate_large(args: argparse.Namespace) -> int:
    from sivae.data.simulate import simulate_large

    out = _check_output(args.output, force=args.force, what="output", folder=False)
    simulate_large(out, args.cells, args.features, n_programs=args.programs,
                   chunk_cells=args.chunk_cells, density=args.density,
                   compression=args.compression, seed=args.seed, force=args.force,
                   progress=not args.no_progress)
    size = out.stat().st_size
    shown = f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 2**10:,.0f} KiB"
    print(f"wrote {out}: {args.cells} cells x {args.features} features, sparse CSR counts "
          f"({shown}); obs[{KEYS.CELL_TYPE!r}], var[{KEYS.PROGRAM!r}]")
    return 0
