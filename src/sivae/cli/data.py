"""``sivae demo`` (a few-minute tour on offline data) and ``sivae simulate-large`` (scale tests)."""

from __future__ import annotations

import argparse
from typing import Any

from sivae._constants import KEYS

from ._args import _check_output, _positive_float, _positive_int, _seed


def add_parsers(sub: Any) -> None:
    _add_demo(sub)
    _add_simulate_large(sub)


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
    p.add_argument("--seed", type=_seed, default=0, help="seed of the generator (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(run=_simulate_large)


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
