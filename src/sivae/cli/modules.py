"""``sivae modules`` and ``sivae enrich``: gene modules of a fitted h5ad as a CSV, and the gene sets
each latent dimension, module and the top hubs hold (offline libraries) as a CSV.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from sivae import _params
from sivae._constants import KEYS
from sivae._files import atomic_file
from sivae._params import cli_type
from sivae._text import field

from ._args import _check_input, _check_output, _non_negative_float, _positive_float, _positive_int, _seed

_fraction = cli_type(_params.fraction, float, name="--max-fdr")
_UNASSIGNED = "unassigned"


def add_parsers(sub: Any) -> None:
    from sivae.tl.enrichment import PARTS

    p = sub.add_parser("modules", help="gene modules of a fitted h5ad (Leiden in the loading space)",
                       description=f"Cluster the genes of an h5ad written by `sivae fit` into modules: Leiden on "
                       f"their k-NN graph in varm[{KEYS.LOADINGS!r}], genes near the origin left unassigned. Writes "
                       "CSV: gene,module,loading_norm (module 'unassigned' for genes in none).")
    p.add_argument("input", metavar="OUT.h5ad", help="h5ad written by `sivae fit`")
    p.add_argument("-o", "--output", metavar="MODULES.csv", required=True, help="CSV to write")
    _module_options(p)
    p.add_argument("--force", action="store_true", help="overwrite MODULES.csv")
    p.set_defaults(run=run_modules)

    p = sub.add_parser("enrich", help="gene sets held by each latent dimension, module and the top hubs",
                       description="Test a gene-set library (offline) against each latent dimension's loadings "
                       "(both ends, rank test), each gene module and the top hubs (over-representation) of an h5ad "
                       "written by `sivae fit`. Modules are computed with the defaults of `sivae modules` when the "
                       "h5ad has none. Writes CSV: source,term,statistic,p,fdr,overlap,set_size,leading_genes.")
    p.add_argument("input", metavar="OUT.h5ad", help="h5ad written by `sivae fit`")
    p.add_argument("--gene-sets", default="go_bp", metavar="GMT|NAME",
                   help="a GMT file or a built-in library: go_bp (GO Biological Process, human; default), "
                   "go_bp_mouse (mouse symbols), go_bp_enrichr (Enrichr 2023, direct annotations)")
    p.add_argument("-o", "--output", metavar="ENRICHMENT.csv", required=True, help="CSV to write")
    p.add_argument("--what", nargs="+", choices=PARTS, help="what to test (default: all present)")
    p.add_argument("--n-hubs", type=_positive_int, default=100, help="top hubs tested (default 100)")
    p.add_argument("--min-size", type=_positive_int, default=5, help="smallest gene set, in genes of the data (default 5)")
    p.add_argument("--max-size", type=_positive_int, default=500, help="largest gene set (default 500)")
    p.add_argument("--max-fdr", type=_fraction, default=0.25, help="rows written: FDR at most this (default 0.25)")
    p.add_argument("--force", action="store_true", help="overwrite ENRICHMENT.csv")
    p.set_defaults(run=run_enrich)


def _module_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=_positive_float, default=1.0, help="Leiden resolution (default 1.0)")
    p.add_argument("--n-neighbors", type=_positive_int, default=15, help="neighbours per gene (default 15)")
    p.add_argument("--min-norm", type=_non_negative_float,
                   help="loading norm at or below which a gene is unassigned (default: chosen from the data)")
    p.add_argument("--min-centrality", type=float,
                   help="centrality at or below which a gene is unassigned (default: chosen from the data)")
    p.add_argument("--min-module-size", type=_positive_int, default=5, help="smallest module kept (default 5)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the neighbour search and Leiden (default 0)")


def _read(path: str) -> Any:
    from sivae import read

    return read(_check_input(path))


def run_modules(args: argparse.Namespace) -> int:
    """Cluster, write gene,module,loading_norm atomically, print a summary."""
    from sivae.tl import gene_modules
    from sivae.tl.modules import unassigned_rule

    out = _check_output(args.output, force=args.force, what="output", suffix=".csv", inputs=(_check_input(args.input),))
    adata = _read(args.input)
    modules = gene_modules(adata, resolution=args.resolution, n_neighbors=args.n_neighbors, min_norm=args.min_norm,
                           min_centrality=args.min_centrality, min_size=args.min_module_size, seed=args.seed)
    norms = np.linalg.norm(np.asarray(adata.varm[KEYS.LOADINGS], dtype=np.float64), axis=1)
    table = pd.DataFrame({"gene": adata.var_names, "module": modules.astype(object).fillna(_UNASSIGNED).to_numpy(),
                          "loading_norm": norms})
    with atomic_file(out, overwrite=args.force) as tmp:
        table.to_csv(tmp, index=False)
    info = adata.uns[KEYS.MODULE]
    sizes = ", ".join(f"{name} {n}" for name, n in modules.value_counts(sort=False).items())
    print(f"wrote {field(out)}: {info['n_modules']} modules ({sizes}) of {adata.n_vars:,} genes; "
          f"{info['n_unassigned']:,} unassigned ({unassigned_rule(info)}, or in a module under "
          f"{args.min_module_size} genes)")
    return 0


def run_enrich(args: argparse.Namespace) -> int:
    """Test, write the table atomically, print the match and each source's best term."""
    from sivae.tl import enrich, gene_modules

    out = _check_output(args.output, force=args.force, what="output", suffix=".csv", inputs=(_check_input(args.input),))
    adata = _read(args.input)
    wants_modules = args.what is None or "modules" in args.what
    lines = []
    if wants_modules and KEYS.MODULE not in adata.var and KEYS.LOADINGS in adata.varm:
        gene_modules(adata)
        lines.append(f"modules: {adata.uns[KEYS.MODULE]['n_modules']} found with the defaults of `sivae modules`")
    table = enrich(adata, args.gene_sets, what=args.what, n_hubs=args.n_hubs, min_size=args.min_size,
                   max_size=args.max_size, max_fdr=args.max_fdr)
    with atomic_file(out, overwrite=args.force) as tmp:
        table.to_csv(tmp, index=False)
    m = table.attrs["matching"]
    lines += [f"matched {m['n_genes_matched']:,} of {m['n_genes']:,} genes to the {m['n_sets']:,} gene sets "
             f"({m['n_sets_kept']:,} with {args.min_size}-{args.max_size} genes in the data, case-insensitive)"]
    for source, rows in table.groupby("source", sort=False):
        best = rows.iloc[0]
        lines.append(f"{field(source)}\t{field(best['term'])}\tFDR {best['fdr']:.2g}")
    lines.append(f"wrote {field(out)}: {len(table):,} rows with FDR <= {args.max_fdr:g}")
    print("\n".join(lines))
    return 0
