"""Differential hubs: a community whose co-expression is removed in one group is found, a gene whose
mean alone shifts is not, a random split finds nothing; the figure, the CLI and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.cli import main
from sivae.datasets import simulated_network
from sivae.tl.differential import COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")

_N = 1200  # cells per group
_SHIFTED = "c1_g05"  # its mean rises in group B, its co-expression does not change


def _planted(seed: int = 0) -> AnnData:
    # groups A and B drawn from the same network, then in B community 0's coupling is removed
    # (each gene permuted over cells: marginals kept, co-expression gone) and one gene's mean shifted
    kw = {"n_communities": 3, "community_size": 20, "n_isolated": 20}
    a = simulated_network(_N, seed=seed, **kw)
    b = simulated_network(_N, seed=seed + 1, **kw)
    rng = np.random.default_rng(seed)
    xb = np.array(b.X)
    for j in np.flatnonzero(b.var[KEYS.COMMUNITY].astype(str) == "community_0"):
        xb[:, j] = rng.permutation(xb[:, j])
    xb[:, b.var_names.get_loc(_SHIFTED)] += 1.5
    adata = AnnData(np.vstack([a.X, xb]).astype(np.float32), var=a.var.copy())
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.obs["condition"] = pd.Categorical(["A"] * _N + ["B"] * _N)
    sivae.pp.scale_features(adata)
    return adata


@pytest.fixture(scope="module")
def trained() -> sivae.SIVAE:
    model = sivae.SIVAE(_planted(), n_latent=4, encoder_hidden=(32, 16), c_red=16, batch_size=64, device="cpu")
    return model.train(max_epochs=30, progress=False)


def test_lost_coexpression_is_found_and_a_mean_shift_is_not(trained):
    d = sivae.tl.differential_hubs(trained, groupby="condition", reference="A", target="B")
    assert list(d.columns) == list(COLUMNS)
    community0 = [g for g in d.index if g.startswith("c0_")]
    assert len(community0) == 20
    lost = d.loc[community0]
    assert (lost["fdr"] < 0.05).all() and (lost["difference"] < 0).all()
    assert d.loc["c0_hub", "difference"] < -0.5  # the hub was the best reconstructed gene of A
    # the 20 largest losses are community 0; the mean-shifted gene is neither significant nor near the top
    assert set(d["difference"].nsmallest(20).index) == set(community0)
    assert d.loc[_SHIFTED, "fdr"] >= 0.05
    assert _SHIFTED not in d["z"].abs().nlargest(25).index
    others = d.drop(community0)
    assert (others["fdr"] < 0.05).sum() <= 2  # the other 40 community and 20 isolated genes: chance only
    # sorted by difference, intervals around the estimate, written where the key rule says
    assert d["difference"].is_monotonic_decreasing
    inside = (d["ci_low"] <= d["difference"]) & (d["difference"] <= d["ci_high"])
    assert inside.mean() > 0.9
    stored = trained.adata.uns[KEYS.DIFFERENTIAL_HUBS]
    pd.testing.assert_frame_equal(stored["table"], d)
    assert stored["params"]["n_reference"] == stored["params"]["n_target"] == _N


def test_a_random_split_of_one_group_finds_nothing(trained):
    cells = trained.adata[trained.adata.obs["condition"] == "A"].copy()
    cells.obs["half"] = np.random.default_rng(1).permutation(np.repeat(["x", "y"], _N // 2))
    d = sivae.tl.differential_hubs(trained, cells, groupby="half", reference="x", target="y", key_added="split")
    assert (d["fdr"] < 0.05).sum() == 0
    assert (d["p_value"] < 0.05).mean() < 0.15  # about 5% expected of 80 genes
    assert cells.uns["split"]["params"]["groupby"] == "half"  # key_added; trained.adata untouched
    assert "split" not in trained.adata.uns


def test_the_result_round_trips_through_h5ad_and_draws(trained, tmp_path):
    adata = trained.adata
    d = sivae.tl.differential_hubs(trained, groupby="condition", reference="A", target="B", n_boot=20, n_perm=200)
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = sivae.read(tmp_path / "out.h5ad").uns[KEYS.DIFFERENTIAL_HUBS]
    pd.testing.assert_frame_equal(back["table"], d, check_index_type=False)
    assert back["params"]["target"] == "B"
    fig = sivae.pl.differential_hubs(adata, path=tmp_path / "diff.png")
    assert (tmp_path / "diff.png").stat().st_size > 0
    assert "c0_hub" in [t.get_text() for t in fig.axes[0].texts]
    with pytest.raises(InputError, match="DataFrame sivae.tl.differential_hubs returned"):
        sivae.pl.differential_hubs(d[["difference"]])


def test_within_strata_a_change_of_composition_is_not_a_change_of_coexpression(trained):
    # "type" A has community 0 coupled, type B not; groups g1 (80% A) and g2 (20% A) differ only in
    # composition: pooled, community 0 looks lost in g2; within each type nothing changes
    cells = trained.adata.copy()
    cells.obs["type"] = cells.obs["condition"].astype(str)
    rng = np.random.default_rng(3)
    in_g2 = np.zeros(cells.n_obs, dtype=bool)
    for t, share in (("A", 0.2), ("B", 0.8)):
        rows = np.flatnonzero(cells.obs["type"] == t)
        in_g2[rng.choice(rows, int(share * len(rows)), replace=False)] = True
    cells.obs["group"] = np.where(in_g2, "g2", "g1")
    kw = {"groupby": "group", "reference": "g1", "target": "g2", "n_boot": 20, "n_perm": 200}
    pooled = sivae.tl.differential_hubs(trained, cells, **kw)
    community0 = [g for g in pooled.index if g.startswith("c0_")]
    assert (pooled.loc[community0, "fdr"] < 0.05).mean() > 0.5
    strata = sivae.tl.differential_hubs(trained, cells, within="type", **kw)
    assert (strata["fdr"] < 0.05).sum() <= 2
    assert strata.loc[community0, "difference"].abs().max() < pooled.loc[community0, "difference"].abs().min()
    params = cells.uns[KEYS.DIFFERENTIAL_HUBS]["params"]
    assert params["within"] == "type" and sorted(params["strata"]) == ["A", "B"]


def test_one_stratum_is_the_pooled_test(trained):
    cells = trained.adata.copy()
    cells.obs["one"] = "all"
    kw = {"groupby": "condition", "reference": "A", "target": "B", "n_boot": 20, "n_perm": 100}
    pd.testing.assert_frame_equal(sivae.tl.differential_hubs(trained, cells, within="one", **kw),
                                  sivae.tl.differential_hubs(trained, cells, **kw), rtol=1e-9)


def test_strata_too_small_are_left_out_or_refused(trained):
    cells = trained.adata.copy()
    cells.obs["type"] = np.where(np.arange(cells.n_obs) % 100 == 0, "rare", "common")  # 12 + 12 rare cells
    kw = {"groupby": "condition", "reference": "A", "target": "B", "n_boot": 10, "n_perm": 50}
    with pytest.warns(UserWarning, match="left out: rare"):
        d = sivae.tl.differential_hubs(trained, cells, within="type", **kw)
    assert cells.uns[KEYS.DIFFERENTIAL_HUBS]["params"]["strata"] == ["common"]
    assert d["difference"].notna().all()
    with pytest.raises(InputError, match="no stratum of obs\\['type'\\] has min_cells=5000"):
        sivae.tl.differential_hubs(trained, cells, within="type", min_cells=5000, **kw)
    with pytest.raises(InputError, match="adata.obs has no 'donor' column for within="):
        sivae.tl.differential_hubs(trained, cells, within="donor", **kw)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"groupby": "donor"}, "adata.obs has no 'donor' column"),
    ({"target": "C"}, "group 'C' is not in adata.obs\\['condition'\\]; its groups are A, B"),
    ({"target": "A"}, "reference and target are both 'A'"),
    ({"min_cells": 5000}, "group 'A' of adata.obs\\['condition'\\] has 1200 cells, fewer than min_cells=5000"),
    ({"n_perm": 3}, "n_perm"),
])
def test_bad_input_is_one_sentence(trained, kwargs, message):
    args = {"groupby": "condition", "reference": "A", "target": "B", **kwargs}
    before = dict(trained.adata.uns)
    with pytest.raises(InputError, match=message):
        sivae.tl.differential_hubs(trained, **args)
    assert trained.adata.uns.keys() == before.keys()


def test_a_model_is_needed():
    adata = _planted()
    with pytest.raises(InputError, match="needs the trained model, not an AnnData"):
        sivae.tl.differential_hubs(adata, groupby="condition", reference="A", target="B")
    untrained = sivae.SIVAE(adata, n_latent=2, encoder_hidden=(8,), c_red=4, device="cpu")
    with pytest.raises(InputError, match="needs a trained model"):
        sivae.tl.differential_hubs(untrained, groupby="condition", reference="A", target="B")


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.sampled_from(["ctrl", "stim", "other", None]), min_size=1, max_size=40))
def test_groups_are_the_labelled_cells_in_order(labels):
    from sivae.tl.differential import _groups

    adata = AnnData(np.zeros((len(labels), 1), dtype=np.float32))
    adata.obs["condition"] = pd.Categorical(labels)
    n_ctrl, n_stim = labels.count("ctrl"), labels.count("stim")
    if min(n_ctrl, n_stim) < 2:
        with pytest.raises(InputError, match="group '(ctrl|stim)'"):
            _groups(adata, "condition", "ctrl", "stim", 2)
        return
    rows, is_target = _groups(adata, "condition", "ctrl", "stim", 2)
    assert list(rows) == [i for i, x in enumerate(labels) if x in ("ctrl", "stim")]
    assert list(is_target) == [labels[i] == "stim" for i in rows]


def test_cli_writes_the_table_and_refuses_an_unknown_group(trained, tmp_path, capsys):
    h5ad, folder = tmp_path / "out.h5ad", tmp_path / "model"
    trained.adata.write_h5ad(h5ad)
    trained.save(folder)
    out = tmp_path / "diff.csv"
    common = ["diff-hubs", str(h5ad), "--model-dir", str(folder), "--groupby", "condition", "--reference", "A", "-o", str(out)]
    assert main([*common, "--target", "Z"]) == 2
    assert "group 'Z' is not in adata.obs['condition']" in capsys.readouterr().err
    assert not out.exists()
    assert main([*common, "--target", "B", "--n-boot", "20", "--n-perm", "200"]) == 0
    said = capsys.readouterr().out
    assert "at FDR < 0.05" in said and "c0_hub" in said
    table = pd.read_csv(out, index_col=0)
    assert list(table.columns) == list(COLUMNS) and len(table) == trained.adata.n_vars
    assert main([*common, "--target", "B", "--within", "cell_kind", "--force"]) == 2
    assert "adata.obs has no 'cell_kind' column for within=" in capsys.readouterr().err
