"""sivae.models.saving and the preprocessing record: new raw cells embedded as in training, old folders load."""

from __future__ import annotations

import pathlib
import re
import warnings

import anndata as ad
import numpy as np
import pytest

import sivae
from sivae._constants import FILES, KEYS
from sivae._errors import InputError
from sivae.data.backed import read_backed
from sivae.data.simulate import simulate_large

SMALL = dict(n_latent=2, encoder_hidden=(16, 8), c_red=10, batch_size=64, seed=0, device="cpu")
RELEASE_0_1_0 = pathlib.Path(__file__).parent / "data" / "release_0_1_0"
PACKAGE = pathlib.Path(sivae.__file__).parent

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("saving") / "counts.h5ad"
    simulate_large(path, 400, 120, n_programs=3, density=0.15, progress=False)
    return path


def _shuffled_with_extra_genes(counts: ad.AnnData) -> ad.AnnData:
    rng = np.random.default_rng(1)
    order = rng.permutation(counts.n_vars)
    new = counts[:, order].copy()
    extra = ad.AnnData(rng.poisson(1.0, (counts.n_obs, 3)).astype(np.float32), obs=new.obs,
                       var={"gene": ["extra1", "extra2", "extra3"]})
    extra.var_names = extra.var["gene"]
    return ad.concat([new, extra], axis=1, merge="first")


def test_raw_counts_embed_as_the_fit_embedded_them(counts_file, tmp_path) -> None:
    adata = ad.read_h5ad(counts_file)
    raw = adata.copy()
    sivae.pp.preprocess(adata, n_top_genes=60)
    model = sivae.SIVAE(adata, **SMALL).train(3, progress=False)
    new = _shuffled_with_extra_genes(raw)
    z = model.get_cell_embedding(new, preprocess=True)
    np.testing.assert_allclose(z, adata.obsm[KEYS.CELL_EMBEDDING], atol=1e-4)
    replayed = sivae.pp.apply(new, model)
    assert list(replayed.var_names) == list(adata.var_names)
    np.testing.assert_allclose(replayed.X, adata.X, atol=1e-4)
    # the record travels with the model: loaded alone, it embeds raw counts the same way
    model.save(tmp_path / "model")
    alone = sivae.load_model(tmp_path / "model", None, device="cpu")
    np.testing.assert_allclose(alone.get_cell_embedding(new, preprocess=True), z, atol=1e-5)
    with pytest.raises(InputError, match="needs the training data"):
        alone.train(1)


def test_a_backed_model_embeds_raw_counts_in_memory_as_the_fit_did(counts_file, tmp_path) -> None:
    backed = read_backed(counts_file)
    sivae.pp.preprocess(backed, n_top_genes=60, progress=False)
    model = sivae.SIVAE(backed, **SMALL).train(3, progress=False)
    model.save(tmp_path / "model")
    alone = sivae.SIVAE.load(tmp_path / "model", device="cpu")
    z = alone.get_cell_embedding(ad.read_h5ad(counts_file), preprocess=True)
    np.testing.assert_allclose(z, backed.obsm[KEYS.CELL_EMBEDDING], atol=1e-4)


def test_a_model_folder_of_release_0_1_0_loads_and_embeds_its_counts() -> None:
    fitted = ad.read_h5ad(RELEASE_0_1_0 / "fit.h5ad")
    model = sivae.load_model(RELEASE_0_1_0 / "model", None, device="cpu")
    z = model.get_cell_embedding(ad.read_h5ad(RELEASE_0_1_0 / "counts.h5ad"), preprocess=True)
    np.testing.assert_allclose(z, fitted.obsm[KEYS.CELL_EMBEDDING], atol=1e-4)
    with_data = sivae.SIVAE.load(RELEASE_0_1_0 / "model", fitted, device="cpu")  # and onto its data
    np.testing.assert_allclose(with_data.get_loadings(), fitted.varm[KEYS.LOADINGS], atol=1e-5)


def test_a_folder_saved_without_the_record_loads_and_says_what_it_lacks(tmp_path) -> None:
    model_dir = tmp_path / "model"
    import shutil

    shutil.copytree(RELEASE_0_1_0 / "model", model_dir)
    (model_dir / FILES.PREPROCESS).unlink()
    with pytest.warns(UserWarning, match="cannot embed raw counts"):
        model = sivae.load_model(model_dir, None, device="cpu")
    with pytest.raises(InputError, match="does not know how its training data were preprocessed"):
        model.get_cell_embedding(ad.read_h5ad(RELEASE_0_1_0 / "counts.h5ad"), preprocess=True)


def test_a_config_describing_a_huge_network_is_refused_before_allocating(tmp_path) -> None:
    import json
    import shutil
    import time

    model_dir = tmp_path / "model"
    shutil.copytree(RELEASE_0_1_0 / "model", model_dir)
    meta = json.loads((model_dir / FILES.CONFIG).read_text())
    meta["config"]["encoder_hidden"] = [3_000_000, 16]
    (model_dir / FILES.CONFIG).write_text(json.dumps(meta))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="does not match its own config.json"):
        sivae.load_model(model_dir, None, device="cpu")
    assert time.perf_counter() - t0 < 5  # header only: nothing of 4 GB was built
    fitted = ad.read_h5ad(RELEASE_0_1_0 / "fit.h5ad")
    with pytest.raises(InputError, match="GiB"):  # a network that cannot fit: refused before allocating
        sivae.SIVAE(fitted, encoder_hidden=(10**12, 16), device="cpu")


@pytest.mark.parametrize("key,value", [("n_latent", "2"), ("encoder_hidden", "abc"), ("encoder_hidden", 32),
                                       ("encoder_hidden", [32.7, 16]), ("gamma", "x"), ("likelihood", ["sivae"]),
                                       ("seed", -1), ("learning_rate", None), ("linear", "yes")])
def test_wrong_types_in_config_json_are_one_sentence(tmp_path, key, value) -> None:
    import json
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(RELEASE_0_1_0 / "model", model_dir)
    meta = json.loads((model_dir / FILES.CONFIG).read_text())
    meta["config"][key] = value
    (model_dir / FILES.CONFIG).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="config.json is invalid") as info:
        sivae.load_model(model_dir, None, device="cpu")
    assert "\n" not in str(info.value)


def test_save_never_replaces_a_folder_it_did_not_write(tmp_path) -> None:
    fitted = ad.read_h5ad(RELEASE_0_1_0 / "fit.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sivae.SIVAE.load(RELEASE_0_1_0 / "model", fitted, device="cpu")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="did not write"):
        model.save(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    model.save(tmp_path / "model")
    model.save(tmp_path / "model", overwrite=True)  # a model folder is ours to replace
    (tmp_path / "model" / "notes.txt").write_text("the user's")
    with pytest.raises(InputError, match="did not write"):
        model.save(tmp_path / "model", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model"]  # no temporaries left


def test_no_private_anndata_api_is_called() -> None:
    private = re.compile(r"\._(inplace_subset_(var|obs)|init_as_(actual|view))\(")
    calls = {p.name for p in PACKAGE.rglob("*.py") if private.search(p.read_text())}
    assert not calls, f"private anndata calls in {sorted(calls)}"
