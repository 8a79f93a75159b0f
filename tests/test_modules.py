"""Gene modules (Leiden in the loading space, genes near the origin unassigned) and module scores."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score

import sivae
from sivae import InputError
from sivae._constants import KEYS
from sivae.tl import gene_modules, module_scores, origin_threshold


def _planted_loadings(seed: int = 0, n_communities: int = 5, size: int = 40, n_isolated: int = 40) -> AnnData:
    # each community's genes point along one direction of an 8-dim loading space (norm ~1); isolated
    # genes sit near the origin (norm ~0.2), as the interpretability term leaves them
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(8, 8)))[0][:n_communities]
    loadings = np.concatenate([d * rng.uniform(0.8, 1.3, size=(size, 1)) + rng.normal(0, 0.12, size=(size, 8))
                               for d in directions] + [rng.normal(0, 0.07, size=(n_isolated, 8))])
    truth = [f"c{c}" for c in range(n_communities) for _ in range(size)] + ["isolated"] * n_isolated
    var = pd.DataFrame({"truth": truth}, index=[f"g{i}" for i in range(len(truth))])
    adata = AnnData(np.zeros((3, len(truth)), dtype=np.float32), var=var)
    adata.varm[KEYS.LOADINGS] = loadings
    return adata


def _score(adata: AnnData, modules: pd.Series, truth: np.ndarray, isolated: np.ndarray) -> tuple[float, float]:
    in_community = ~isolated
    ari = adjusted_rand_score(truth[in_community], modules[in_community].astype(str))
    return float(ari), float(modules[isolated].isna().mean())


def test_planted_communities_are_modules_and_isolated_genes_stay_unassigned(tmp_path):
    adata = _planted_loadings()
    modules = gene_modules(adata)
    isolated = (adata.var["truth"] == "isolated").to_numpy()
    ari, iso_unassigned = _score(adata, modules, adata.var["truth"].to_numpy(), isolated)
    print(f"\nplanted loadings: ARI {ari:.3f}, isolated unassigned {iso_unassigned:.2f}")
    assert ari >= 0.95 and iso_unassigned == 1.0
    assert modules[~isolated].notna().mean() > 0.97
    assert list(modules.cat.categories) == ["M1", "M2", "M3", "M4", "M5"]
    info = adata.uns[KEYS.MODULE]
    assert info["ashman_d"] > 2 and 0.3 < info["norm_threshold"] < 0.7 and info["n_modules"] == 5
    # written to var as a categorical (so M10 follows M9, not M1), and a round trip through h5ad keeps the unassigned genes unassigned
    assert isinstance(adata.var[KEYS.MODULE].dtype, pd.CategoricalDtype)
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad").var[KEYS.MODULE]
    assert back.isna().sum() == modules.isna().sum() and (back.dropna() == modules.dropna().to_numpy()).all()
    assert list(back.cat.categories) == list(modules.cat.categories)  # M1, M2, ... in order, not as text sorts


def test_with_a_centrality_the_unexplained_genes_are_those_it_calls_unexplained():
    # isolated genes as far from the origin as community genes (the interpretability term did not
    # pull them in) but explained by nothing: centrality about 0 against about 0.4
    adata = _planted_loadings(seed=1)
    isolated = (adata.var["truth"] == "isolated").to_numpy()
    rng = np.random.default_rng(1)
    lifted = adata.varm[KEYS.LOADINGS].copy()
    lifted[isolated] *= 1.0 / np.linalg.norm(lifted[isolated], axis=1, keepdims=True)
    adata.varm[KEYS.LOADINGS] = lifted
    adata.var[KEYS.CENTRALITY] = np.where(isolated, rng.normal(0, 0.002, len(isolated)),
                                          rng.uniform(0.3, 0.9, len(isolated)))
    modules = gene_modules(adata)
    ari, iso_unassigned = _score(adata, modules, adata.var["truth"].to_numpy(), isolated)
    assert ari >= 0.95 and iso_unassigned == 1.0 and modules[~isolated].notna().all()
    info = adata.uns[KEYS.MODULE]
    assert 0.0 < info["centrality_threshold"] < 0.3 and info["norm_threshold"] == 0.0
    # the norms alone cannot tell: every gene is clustered, the isolated ones as a module of their own
    by_norm = gene_modules(adata, min_norm=0.0, key_added="by_norm")
    assert by_norm[isolated].notna().all()
    # a threshold given by hand is used as it is
    strict = gene_modules(adata, min_centrality=0.6, key_added="strict")
    assert strict[(adata.var[KEYS.CENTRALITY] <= 0.6).to_numpy()].isna().all()
    del adata.var[KEYS.CENTRALITY]
    with pytest.raises(InputError, match="min_centrality needs adata.var\\['sivae_centrality'\\]"):
        gene_modules(adata, min_centrality=0.1)


def test_min_norm_zero_clusters_every_gene_and_one_group_of_norms_has_no_origin():
    adata = _planted_loadings()
    everyone = gene_modules(adata, min_norm=0.0, key_added="all_genes")
    assert everyone.notna().mean() > 0.9 and "all_genes" in adata.var and "all_genes" in adata.uns
    rng = np.random.default_rng(1)
    threshold, d = origin_threshold(np.exp(rng.normal(size=2000)))  # one log-normal group: no origin
    assert threshold == 0.0 and d <= 2
    threshold, d = origin_threshold(np.r_[np.exp(rng.normal(0, 0.1, 500)), np.exp(rng.normal(-1.6, 0.2, 100))])
    assert d > 2 and 0.25 < threshold < 0.85


def test_bad_inputs_are_one_sentence():
    adata = _planted_loadings()
    with pytest.raises(InputError, match="too few for n_neighbors=500"):
        gene_modules(adata, n_neighbors=500)
    with pytest.raises(InputError, match="resolution"):
        gene_modules(adata, resolution=-1)
    with pytest.raises(InputError, match="train a model"):
        gene_modules(AnnData(np.zeros((2, 3))))
    adata.varm[KEYS.LOADINGS][0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        gene_modules(adata)
    with pytest.raises(InputError, match="run sivae.tl.gene_modules first"):
        module_scores(AnnData(np.zeros((2, 3))))


def test_trained_model_recovers_the_simulated_network_and_scores_its_modules():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adata = sivae.datasets.simulated_network(n_cells=2000, seed=0)
        sivae.SIVAE(adata, n_latent=8, encoder_hidden=(128, 64), seed=0, device="cpu").train(
            max_epochs=60, progress=False)
    finally:
        torch.set_num_threads(n)
    modules = gene_modules(adata)
    isolated = adata.var[KEYS.IS_ISOLATED].to_numpy(dtype=bool)
    ari, iso_unassigned = _score(adata, modules, adata.var[KEYS.COMMUNITY].astype(str).to_numpy(), isolated)
    print(f"\nsimulated network, K=8: ARI {ari:.3f}, isolated unassigned {iso_unassigned:.2f}, "
          f"threshold {adata.uns[KEYS.MODULE]['norm_threshold']:.3f}")
    assert ari >= 0.9 and iso_unassigned == 1.0
    scores = module_scores(adata)
    assert scores.shape == (adata.n_obs, 5) and adata.obsm[KEYS.MODULE_SCORES] is not None
    # each module's score follows the hub of the community it holds
    for name in scores.columns:
        genes = adata.var_names[(modules == name).to_numpy()]
        hub = [g for g in genes if adata.var.loc[g, KEYS.IS_HUB]]
        assert len(hub) == 1
        r = np.corrcoef(scores[name], np.asarray(adata[:, hub[0]].X).ravel())[0, 1]
        assert r > 0.6, (name, r)


# -- the command line -----------------------------------------------------------------------------
def test_cli_modules_and_enrich_end_to_end(tmp_path, capsys):
    from sivae.cli import main

    adata = _planted_loadings()
    adata.var[KEYS.CENTRALITY] = np.linalg.norm(adata.varm[KEYS.LOADINGS], axis=1)
    adata.write_h5ad(tmp_path / "out.h5ad")
    truth = adata.var["truth"]
    (tmp_path / "sets.gmt").write_text("".join(
        f"SET_{c}\tplanted\t" + "\t".join(g.upper() for g in adata.var_names[truth == c]) + "\n"
        for c in ("c0", "c1", "c2")))
    assert main(["modules", str(tmp_path / "out.h5ad"), "-o", str(tmp_path / "modules.csv")]) == 0
    table = pd.read_csv(tmp_path / "modules.csv")
    assert list(table.columns) == ["gene", "module", "loading_norm"] and len(table) == adata.n_vars
    assert (table.loc[(truth == "isolated").to_numpy(), "module"] == "unassigned").all()
    assert "5 modules" in capsys.readouterr().out
    assert main(["enrich", str(tmp_path / "out.h5ad"), "--gene-sets", str(tmp_path / "sets.gmt"),
                 "-o", str(tmp_path / "enrichment.csv")]) == 0
    out = capsys.readouterr().out
    assert "modules: 5 found" in out and "matched 120 of 240 genes to the 3 gene sets" in out
    result = pd.read_csv(tmp_path / "enrichment.csv")
    best = result.loc[result.groupby("source")["p"].idxmin()]
    modules = best[best["source"].str.startswith("module")]
    assert len(modules) == 3 and (modules["fdr"] < 0.05).all() and "hubs" in set(result["source"])


def test_cli_bad_inputs_are_one_sentence_and_write_nothing(tmp_path, capsys):
    from sivae.cli import main

    adata = _planted_loadings()
    adata.write_h5ad(tmp_path / "out.h5ad")
    (tmp_path / "bad.gmt").write_text("ONLY_A_NAME\n")
    (tmp_path / "other.gmt").write_text("S\td\tISG15\tMX1\tIFIT1\tOAS1\tIFI6\n")
    cases = [
        (["enrich", str(tmp_path / "out.h5ad"), "--gene-sets", str(tmp_path / "bad.gmt")], "is not GMT"),
        (["enrich", str(tmp_path / "out.h5ad"), "--gene-sets", str(tmp_path / "other.gmt")], "none of the 240 genes"),
        (["enrich", str(tmp_path / "out.h5ad"), "--gene-sets", str(tmp_path / "missing.gmt")], "does not exist"),
        (["enrich", str(tmp_path / "out.h5ad"), "--what", "hubs", "--gene-sets", str(tmp_path / "other.gmt")],
         "sivae_centrality"),
        (["enrich", str(tmp_path / "out.h5ad"), "--max-fdr", "2"], "--max-fdr"),
        (["modules", str(tmp_path / "out.h5ad"), "--n-neighbors", "999"], "too few for n_neighbors=999"),
        (["modules", str(tmp_path / "missing.h5ad")], "does not exist"),
    ]
    for argv, message in cases:
        out = str(tmp_path / ("x.csv"))
        assert main(argv + ["-o", out]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)
        assert not (tmp_path / "x.csv").exists()


# -- figures --------------------------------------------------------------------------------------
def test_figures_draw_modules_and_enrichment_and_refuse_bad_input(tmp_path):
    adata = _planted_loadings()
    gene_modules(adata)
    fig = sivae.pl.gene_modules(adata, path=tmp_path / "modules.png")
    assert (tmp_path / "modules.png").stat().st_size > 5000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "unassigned (40)" and len(labels) == 6
    sets = {f"S{c}": list(adata.var_names[adata.var["truth"] == f"c{c}"]) for c in range(3)}
    res = sivae.tl.enrich(adata, sets, max_fdr=1.0)
    fig = sivae.pl.enrichment(res, n_terms=2, path=tmp_path / "enrichment.png")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks and all(": S" in t for t in ticks)
    with pytest.raises(InputError, match="no term of the enrichment table"):
        sivae.pl.enrichment(res, max_fdr=1e-300)
    with pytest.raises(InputError, match="must be the DataFrame"):
        sivae.pl.enrichment({"a": 1})
    with pytest.raises(InputError, match="run sivae.tl.gene_modules first"):
        sivae.pl.gene_modules(AnnData(np.zeros((2, 3))))


def test_modules_are_indexed_by_gene_name():
    adata = _planted_loadings()
    modules = gene_modules(adata)
    assert modules.index.equals(adata.var_names)
    assert modules["g0"] == modules["g1"] and pd.isna(modules[adata.var_names[-1]])
