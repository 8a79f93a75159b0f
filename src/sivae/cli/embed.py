"""``sivae embed``: embed new cells with a saved model, replaying its training preprocessing."""

from __future__ import annotations

import argparse
from typing import Any

from sivae._errors import InputError

from ._args import _check_input, _check_output, _device


def add_parsers(sub: Any) -> None:
    _add_embed(sub)


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
    p.add_argument("--device", type=_device, default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the model alone, transform IN as its training cells were, write the embedding."""
    from sivae import load_model, read
    from sivae.data.io import write_h5ad
    from sivae.models.saving import read_model_folder

    read_model_folder(args.model_dir)  # a missing or corrupt model is refused before IN is read
    source = _check_input(args.input)
    out = _check_output(args.output, force=args.force, what="output", inputs=(source, args.model_dir))
    model = load_model(args.model_dir, None, device=args.device)
    if not args.no_preprocess and model.preprocessing is None:
        raise InputError(f"{args.model_dir!r} does not record how its training cells were preprocessed "
                         "(it was not trained on data prepared by sivae); preprocess IN the same way "
                         "yourself and pass --no-preprocess")
    cells = read(source)
    if not args.no_preprocess:  # the model's genes, transformed as its training cells were
        cells = model.preprocess(cells)
    cells.obsm[model.keys.cell_embedding] = model.get_cell_embedding(cells)
    write_h5ad(cells, out, force=args.force)
    print(f"wrote {out}: {cells.n_obs} cells embedded in obsm[{model.keys.cell_embedding!r}]")
    return 0
