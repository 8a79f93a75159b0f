"""``sivae report``: one self-contained HTML page about a fitted model's output."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import _check_input, _check_output, _positive_int


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write one self-contained HTML page about a fitted model",
        description="Read OUT.h5ad written by `sivae fit` and write an HTML page with every figure "
        "inline (no network needed to view it): the cell embedding, the feature embedding with the "
        "top hubs named, centrality, the training curves of each step, the run's parameters and the "
        "analyses' results where they ran.",
    )
    p.add_argument("input", metavar="OUT.h5ad", help="the output of `sivae fit`")
    p.add_argument("-o", "--output", metavar="REPORT.html", required=True, help="HTML file to write")
    p.add_argument("--model-dir", metavar="DIR", default=None,
                   help="the model folder of `sivae fit`: its configuration is listed too")
    p.add_argument("--color", default=None,
                   help="obs column to colour cells by (default: cell_type, else the first categorical)")
    p.add_argument("--hubs", type=_positive_int, default=10, help="how many of the most central features to name")
    p.add_argument("--title", default=None, help="page title (default: siVAE report)")
    p.add_argument("--force", action="store_true", help="overwrite REPORT.html")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the paths, read the AnnData, write the page."""
    from sivae import read
    from sivae.report import write_report

    source = _check_input(args.input)
    _check_output(args.output, force=args.force, what="output", suffix=(".html", ".htm"), inputs=(source,))
    adata = read(source)
    path = write_report(adata, args.output, overwrite=args.force, model_dir=args.model_dir, color=args.color,
                        n_hubs=args.hubs, title=args.title, source=str(source))
    print(f"wrote {path}: {adata.n_obs} cells x {adata.n_vars} features")
    return 0
