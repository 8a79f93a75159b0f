"""``sivae hubs``, ``sivae neighbors`` and ``sivae grn``: gene hubs and neighbourhoods from a fitted
h5ad, and a gene network inferred from cells (CLR, MRNET, ARACNE, GRNBoost2) as an edge list.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sivae._constants import KEYS
from sivae._files import atomic_file
from sivae._text import field

from ._args import _check_input, _check_output, _n_jobs, _positive_int, _seed

if TYPE_CHECKING:
    import pandas as pd


def add_parsers(sub: Any) -> None:
    from sivae.tl.grn import METHODS

    p = sub.add_parser("hubs", help="the most central genes of a fitted h5ad",
                       description=f"Print the genes with the highest var[{KEYS.CENTRALITY!r}] "
                       "(per-gene reconstruction accuracy) of an h5ad written by `sivae fit`.")
    p.add_argument("input", metavar="OUT.h5ad", help="h5ad written by `sivae fit`")
    p.add_argument("--top", type=_positive_int, default=20, help="how many genes (default 20)")
    p.add_argument("--key", default=KEYS.CENTRALITY, help=f"var column to rank by (default {KEYS.CENTRALITY})")
    p.add_argument("--stability", metavar="MODEL_DIR", help="also print each hub's bootstrap rank interval "
                   "(95%%, over the training cells), from the model `sivae fit --model-dir` saved")
    p.add_argument("--n-boot", type=_positive_int, default=200, help="bootstrap replicates (default 200)")
    p.set_defaults(run=run_hubs)

    p = sub.add_parser("neighbors", help="a gene's nearest genes in the loading space (siVAE-Euc)",
                       description=f"Print the k genes nearest GENE in varm[{KEYS.LOADINGS!r}] "
                       "(Euclidean) of an h5ad written by `sivae fit`.")
    p.add_argument("input", metavar="OUT.h5ad", help="h5ad written by `sivae fit`")
    p.add_argument("--gene", required=True, help="query gene, a name in var_names")
    p.add_argument("--k", type=_positive_int, default=20, help="number of neighbours (default 20)")
    p.add_argument("--key", default=KEYS.LOADINGS, help=f"varm embedding (default {KEYS.LOADINGS})")
    p.set_defaults(run=run_neighbors)

    p = sub.add_parser("grn", help="infer a gene network from cells, written as an edge list",
                       description="Infer a gene network from the cells of IN (adata.X, or --layer) "
                       "and write its edges, strongest first, as CSV: source,target,weight "
                       "(undirected methods list each pair once).")
    p.add_argument("input", metavar="IN.h5ad", help="cells x genes h5ad (preprocessed)")
    p.add_argument("--method", choices=METHODS, default="clr", help="network method (default clr)")
    p.add_argument("-o", "--output", metavar="NET.csv", required=True, help="CSV edge list to write")
    p.add_argument("--top", type=_positive_int, metavar="N", help="write only the N strongest edges")
    p.add_argument("--layer", help="read adata.layers[LAYER] instead of adata.X")
    p.add_argument("--n-jobs", type=_n_jobs, default=1,
                   help="grnboost2: parallel jobs over targets, -1 for all cores (default 1)")
    p.add_argument("--seed", type=_seed, default=0, help="grnboost2: seed of the trees (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite NET.csv")
    p.set_defaults(run=run_grn)


def _read(path: str) -> Any:
    from sivae import read

    return read(_check_input(path))


def run_hubs(args: argparse.Namespace) -> int:
    """Print rank, gene and centrality of the top genes."""
    from sivae.tl import hubs

    adata = _read(args.input)
    if args.stability is None:
        _print_table(("rank", "gene", args.key), hubs(adata, n=args.top, key=args.key))
        return 0
    from sivae import load_model

    table = hubs(adata, n=args.top, key=args.key, stability=load_model(_check_input(args.stability), device="cpu"),
                 n_boot=args.n_boot)
    lines = ["\t".join(map(field, ("rank", "gene", args.key, "rank_low", "rank_high")))]
    lines += [f"{rank}\t{field(gene)}\t{row[args.key]:.4f}\t{int(row['rank_low'])}\t{int(row['rank_high'])}"
              for rank, (gene, row) in enumerate(table.iterrows(), start=1)]
    print("\n".join(lines))
    return 0


def run_neighbors(args: argparse.Namespace) -> int:
    """Print the neighbours of one gene, nearest first, with their distances."""
    from sivae.tl import neighbors

    near = neighbors(_read(args.input), gene=args.gene, k=args.k, key=args.key)
    _print_table(("rank", "gene", "distance"), near)
    return 0


def _print_table(header: tuple[str, str, str], ranked: pd.Series) -> None:
    # tab-separated, one gene a line: names holding a tab or newline are escaped (sivae._text)
    lines = ["\t".join(map(field, header))]
    lines += [f"{rank}\t{field(gene)}\t{value:.4f}" for rank, (gene, value) in enumerate(ranked.items(), start=1)]
    print("\n".join(lines))


def run_grn(args: argparse.Namespace) -> int:
    """Infer the network and write its edge list atomically."""
    from sivae.tl import edge_list, grn

    out = _check_output(args.output, force=args.force, what="output", suffix=".csv",
                        inputs=(_check_input(args.input),))
    options = {"n_jobs": args.n_jobs, "seed": args.seed} if args.method == "grnboost2" else {}
    weights = grn(_read(args.input), method=args.method, layer=args.layer, **options)
    edges = edge_list(weights, directed=args.method == "grnboost2", top=args.top)
    with atomic_file(out, overwrite=args.force) as tmp:
        edges.to_csv(tmp, index=False)
    print(f"wrote {field(out)}: {len(edges):,} {args.method} edges between {weights.shape[0]:,} genes")
    return 0
