"""``sivae attribute``: neural-network attributions of a saved model, summarised into loadings."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from sivae._constants import KEYS

from ._args import _check_input, _check_output, _device, _finite_float, _positive_int, _seed


def add_parsers(sub: Any) -> None:
    from sivae.tl.attribution import METHODS, MODES, TARGETS

    p = sub.add_parser(
        "attribute", help="attributions of a saved model's decoder or encoder, as loadings",
        description="Load the model in --model-dir onto IN (the h5ad `sivae fit` wrote: "
        "preprocessed cells on the model's features), attribute every feature to every latent "
        f"dimension per cell, summarise them by PCA into features x K loadings (varm['{KEYS.ATTRIBUTION}"
        "_<method>'], signs aligned with the model's loadings) and write OUT.",
    )
    p.add_argument("input", metavar="IN", help="h5ad written by `sivae fit` (or preprocessed alike)")
    p.add_argument("--model-dir", metavar="DIR", required=True, help="folder from `sivae fit --model-dir`")
    p.add_argument("--method", choices=METHODS, required=True, help="attribution method")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="h5ad file to write")
    p.add_argument("--target", choices=TARGETS, default="decoder",
                   help="decoder (latent dims -> features; default) or encoder (features -> dims)")
    p.add_argument("--mode", choices=MODES, default="reverse",
                   help="reverse (default) or forward (saliency and grad_x_input only)")
    p.add_argument("--n-cells", type=_positive_int, metavar="N",
                   help="attribute a seeded sample of N cells (default: all cells)")
    p.add_argument("--baseline", type=_finite_float, default=0.0,
                   help="reference input of deeplift, integrated gradients and shapley (default 0)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the cell sample (default 0)")
    p.add_argument("--device", type=_device, default="auto", help="auto (a GPU when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Attribute, summarise, write; print how far the summary agrees with the model's loadings."""
    from sivae import load_model, read
    from sivae.data.io import write_h5ad
    from sivae.tl.agreement import agreement
    from sivae.tl.attribution import attribute, attribution_key
    from sivae.tl.attribution_summary import summarize_attributions

    source = _check_input(args.input)
    out = _check_output(args.output, force=args.force, what="output", inputs=(source, args.model_dir))
    adata = read(source)
    model = load_model(args.model_dir, adata, device=args.device)
    loadings = model.keys.loadings if model.keys.loadings in adata.varm else None
    attr = attribute(model, adata, method=args.method, target=args.target, mode=args.mode,
                     n_cells=args.n_cells, seed=args.seed, baseline=args.baseline)
    key = attribution_key(args.method, args.target)
    summarize_attributions(attr, reference=loadings, key_added=key)  # and uns[key]: how, in what time
    seconds = adata.uns[key]["seconds"]
    agree = ""
    if loadings is not None:
        table = agreement(adata, {"loadings": loadings, args.method: key}, inplace=False)
        agree = f"; median |Spearman| with varm[{loadings!r}] {float(np.asarray(table['median'])[0]):.3f}"
    write_h5ad(adata, out, force=args.force)
    print(f"wrote {out}: {args.method} on the {args.target} of {len(attr.cells)} cells in "
          f"{seconds:.1f} s, summarised in varm[{key!r}]{agree}")
    return 0
