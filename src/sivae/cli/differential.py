"""``sivae diff-hubs``: the genes whose siVAE centrality changes between two groups of cells, from
the h5ad and the model folder that ``sivae fit`` wrote, as a CSV table."""

from __future__ import annotations

import argparse
from typing import Any

from sivae._files import atomic_file
from sivae._text import field

from ._args import _check_input, _check_output, _device, _positive_int, _seed


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "diff-hubs", help="hubs whose centrality changes between two groups of cells",
        description="Load the model in --model-dir onto IN (the h5ad `sivae fit` wrote, with the groups "
        "in obs[GROUPBY]), measure each gene's centrality within the reference and the target cells, "
        "and write per gene both centralities, their difference (target - reference), a bootstrap "
        "interval, a permutation p-value and BH FDR as CSV, largest gain first.")
    p.add_argument("input", metavar="IN", help="h5ad written by `sivae fit` (all its cells are scored)")
    p.add_argument("--model-dir", metavar="DIR", required=True, help="folder from `sivae fit --model-dir`")
    p.add_argument("--groupby", required=True, help="obs column holding the groups")
    p.add_argument("--reference", required=True, help="reference group (e.g. ctrl)")
    p.add_argument("--target", required=True, help="target group (e.g. stim)")
    p.add_argument("-o", "--output", metavar="DIFF.csv", required=True, help="CSV table to write")
    p.add_argument("--n-boot", type=_positive_int, default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--n-perm", type=_positive_int, default=1000, help="label permutations (default 1000)")
    p.add_argument("--min-cells", type=_positive_int, default=50, help="fewest cells per group (default 50)")
    p.add_argument("--within", default=None, metavar="COLUMN",
                   help="obs column of strata (e.g. cell_type): differences taken within each, then averaged")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the replicates (default 0)")
    p.add_argument("--device", type=_device, default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite DIFF.csv")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Score, write the table atomically, print how many genes pass FDR 0.05 and the top ones."""
    from sivae import load_model, read
    from sivae.tl.differential import differential_hubs

    source = _check_input(args.input)
    out = _check_output(args.output, force=args.force, what="output", suffix=".csv", inputs=(source, args.model_dir))
    model = load_model(_check_input(args.model_dir), read(source), device=args.device)
    table = differential_hubs(model, groupby=args.groupby, reference=args.reference, target=args.target,
                              n_boot=args.n_boot, n_perm=args.n_perm, min_cells=args.min_cells, within=args.within,
                              seed=args.seed)
    with atomic_file(out, overwrite=args.force) as tmp:
        table.to_csv(tmp)
    hits = table[table["fdr"] < 0.05]
    gains = ", ".join(map(field, hits.index[hits["difference"] > 0][:5])) or "none"
    losses = ", ".join(map(field, hits.index[hits["difference"] < 0][::-1][:5])) or "none"
    print(f"wrote {field(str(out))}: {len(table):,} genes, {len(hits):,} at FDR < 0.05 "
          f"({args.target} vs {args.reference}); top gains {gains}; top losses {losses}")
    return 0
