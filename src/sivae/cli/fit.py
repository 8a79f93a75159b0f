"""``sivae fit``: read a file, preprocess it, train siVAE, write the AnnData and the model.

Every destination is checked before anything is read or trained (it exists without --force, it
is a folder sivae did not write, it is or lies inside the input, two of them coincide), and the
outputs are written together at the end, under a lock on their folders, in one commit
(sivae._commit): a failure leaves neither, a kill leaves both old or (once the next run or read
finishes the commit) both new, and concurrent runs never mix.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

from sivae._constants import FILES
from sivae._errors import InputError
from sivae._files import (atomic_outputs, check_destination, check_distinct, locked, recover_outputs,
                          write_anndata)

from sivae.data.hvg import DEFAULT_FLAVOR, FLAVORS
from sivae.models.config import ModelConfig
from sivae.train.config import TrainConfig, shared_with

from ._args import _check_input, _top_genes
from ._settings import add_settings, check_given, given

# a checkpoint folder holds these and nothing else; sivae replaces no other folder
_CHECKPOINT_MARKERS = (FILES.CHECKPOINT_META,)
_CHECKPOINT_NAMES = FILES.CHECKPOINT_TENSORS.replace(".", r"\.").replace("{}", r"\d+")


def add_parsers(sub: Any) -> None:
    _add_fit(sub)


def _add_fit(sub: Any) -> None:
    p = sub.add_parser(
        "fit", help="preprocess a cells x features file, train siVAE, write the result",
        description="Read IN, preprocess it (unless --no-preprocess), train siVAE and write an "
        "h5ad with obsm['X_sivae'], varm['sivae_loadings'], var['sivae_centrality'], uns['sivae'].",
    )
    p.add_argument("input", metavar="IN", help=".h5ad, 10x .h5, 10x mtx folder, .csv/.tsv or .loom")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="h5ad file to write")
    p.add_argument("--model-dir", metavar="DIR", help="also save the trained model to this folder")
    # the model's and the trainer's settings, one option each, from the dataclasses that declare them
    add_settings(p, ModelConfig)
    add_settings(p, TrainConfig, skip=shared_with(ModelConfig))
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--n-top-genes", type=_top_genes, default=2000, metavar="N|all",
                   help="highly variable features kept by preprocessing (default 2000; all: "
                   "every non-constant feature)")
    p.add_argument("--hvg-flavor", choices=FLAVORS, default=DEFAULT_FLAVOR,
                   help="how preprocessing picks them: seurat_v3 on the counts (default) or seurat on "
                   "the log-normalised values (sivae.pp.preprocess's flavor)")
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check every destination, train, then write all outputs in one step."""
    from sivae import SIVAE
    from sivae.distributed import process_group

    options, training = _model_options(args), given(args, TrainConfig, skip=shared_with(ModelConfig))
    check_given(ModelConfig, options)  # before any file is read
    check_given(TrainConfig, training)
    source = _check_input(args.input)
    out, model_dir, checkpoints = _destinations(args, source)
    with process_group(args.device) as rank:
        adata = _load_once(source, args, rank=rank)
        model = SIVAE(adata, device=args.device, **options)
        model.train(checkpoint_dir=checkpoints, resume=args.resume, progress=not args.no_progress, **training)
    if rank != 0:
        return 0  # every rank holds the same model; rank 0 writes it
    _write(model, args, source, out, model_dir)
    keys = model.keys
    saved = f"; model saved to {model_dir}" if model_dir is not None else ""
    print(f"wrote {out}: {adata.n_obs} cells x {adata.n_vars} features; obsm"
          f"[{keys.cell_embedding!r}], varm[{keys.loadings!r}], var[{keys.centrality!r}]{saved}")
    return 0


def _write(model: Any, args: argparse.Namespace, source: Path, out: Path, model_dir: Path | None) -> None:
    """The h5ad and the model folder, renamed in together: both this run's, or both the old ones.

    A run id in uns and in config.json names the pair, so that loading a model with the AnnData
    of another run is refused even when the two were copied about by hand.
    """
    from sivae.models.saving import RUN_ID, write_model_folder

    model.adata.uns[model.keys.uns][RUN_ID] = uuid.uuid4().hex
    with locked(out, *([model_dir] if model_dir else [])):
        _destinations(args, source)  # again, under the lock: another run may have written meanwhile
        with atomic_outputs() as commit:
            write_anndata(model.adata, commit.file(out, overwrite=args.force))
            if model_dir is not None:
                write_model_folder(model_dir, **model.folder_contents(), overwrite=args.force, commit=commit)


def _destinations(args: argparse.Namespace, source: Path) -> tuple[Path, Path | None, Path | None]:
    """Refuse any destination that could lose the user's files, before any work."""
    if Path(args.output).suffix.lower() != ".h5ad":
        raise InputError(f"output {args.output!r} must end in .h5ad")
    if args.resume and args.checkpoint_dir is None:
        raise InputError("--resume needs --checkpoint-dir, the folder holding the checkpoint")
    for path in (args.output, args.model_dir):  # a killed run's commit first, whatever is refused next
        if path is not None:
            recover_outputs(path)
    out = check_destination(args.output, what="output", overwrite=args.force, inputs=[source])
    model_dir = None
    if args.model_dir is not None:
        from sivae.models.saving import MODEL_FILES, MODEL_FOLDER_NAMES

        model_dir = check_destination(args.model_dir, what="--model-dir", overwrite=args.force, folder=True,
                                      owned_markers=MODEL_FILES, owned_allowed=MODEL_FOLDER_NAMES,
                                      inputs=[source])
    checkpoints = None
    if args.checkpoint_dir is not None:
        checkpoints = Path(args.checkpoint_dir)
        empty = checkpoints.is_dir() and not checkpoints.is_symlink() and not any(checkpoints.iterdir())
        # an existing checkpoint folder is ours to resume or continue; an empty one to fill
        check_destination(checkpoints, what="--checkpoint-dir", overwrite=True, folder=True,
                          owned_markers=() if empty else _CHECKPOINT_MARKERS,
                          owned_allowed=_CHECKPOINT_NAMES, inputs=[source])
    # after each destination's own checks, which name the real reason (e.g. "/" is not ours)
    check_distinct({"-o": args.output, "--model-dir": args.model_dir, "--checkpoint-dir": args.checkpoint_dir})
    return out, model_dir, checkpoints


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    options = given(args, ModelConfig)
    if "encoder_hidden" in options and "decoder_hidden" not in options:  # --hidden: the decoder mirrors it
        options["decoder_hidden"] = tuple(reversed(options["encoder_hidden"]))
    return options


def _load_once(source: Path, args: argparse.Namespace, *, rank: int) -> Any:
    """IN, ready to train on, in every process, read and preprocessed once.

    In memory (every rank holds the whole matrix anyway) rank 0 reads and preprocesses and the
    others receive the result; on disk (--backed) every rank takes part, each reading its share
    of the cells in every preprocessing pass (sivae.data.streaming).
    """
    from sivae.distributed import load_on_rank_zero

    progress = not args.no_progress and rank == 0
    if args.backed:
        return _load(source, args, progress=progress)
    return load_on_rank_zero(lambda: _load(source, args, progress=progress))


def _load(source: Path, args: argparse.Namespace, *, progress: bool) -> Any:
    """IN as the model trains on it: read (or opened on disk with --backed) and preprocessed."""
    from sivae import pp, read, read_backed

    if not args.backed:
        adata = read(source)
        return adata if args.no_preprocess else _preprocess(adata, args)
    adata = read_backed(source)
    if args.no_preprocess:  # normalised values in a CSR file: only the z-score is left to do
        pp.scale_features(adata, progress=progress)
        return adata
    return _preprocess(adata, args, progress=progress)


def _preprocess(adata: Any, args: argparse.Namespace, *, progress: bool = True) -> Any:
    from sivae import pp

    # genes chosen across the batches the model is told of (--batch-key)
    result = pp.preprocess(adata, n_top_genes=args.n_top_genes, flavor=args.hvg_flavor, progress=progress,
                           batch_key=getattr(args, "batch_key", None))
    return adata if result is None else result
