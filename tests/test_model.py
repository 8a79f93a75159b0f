"""sivae.SIVAE, VAE, LDVAE and load_model: outputs under their keys, seeds, files, bad input refused."""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae import LDVAE, SIVAE, VAE, InputError, load_model
from sivae._constants import FILES, KEYS, output_keys

N_CELLS, N_GENES, K = 120, 30, 2
# tiny networks: every fit below takes well under a second on one CPU thread
TINY = {"encoder_hidden": (16, 8), "batch_size": 32, "device": "cpu"}
SIVAE_TINY = {**TINY, "c_red": 10}
BASELINE_KEYS = {VAE: output_keys("vae"), LDVAE: output_keys("ldvae")}


pytestmark = pytest.mark.usefixtures("one_thread")


def _adata(n_cells: int = N_CELLS, n_genes: int = N_GENES, seed: int = 0) -> AnnData:
    # two cell groups whose first 10 genes differ 4-fold; X z-scored log counts, raw counts kept
    rng = np.random.default_rng(seed)
    group = np.arange(n_cells) % 2
    rate = np.full((n_cells, n_genes), 4.0)
    rate[group == 1, :10] *= 4.0
    counts = rng.poisson(rate)
    X = np.log1p(counts)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    assert np.isfinite(X).all()  # no constant gene was drawn
    obs = pd.DataFrame({"group": pd.Categorical(group.astype(str))},
                       index=[f"cell{i}" for i in range(n_cells)])
    adata = AnnData(X, obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    adata.layers[KEYS.COUNTS] = counts.astype(np.float32)
    return adata


def _fit(cls: type = SIVAE, adata: AnnData | None = None, **kwargs):
    adata = _adata() if adata is None else adata
    tiny = SIVAE_TINY if cls is SIVAE else TINY
    return cls(adata, **{**tiny, **kwargs}).train(max_epochs=2, progress=False)


@pytest.fixture(scope="module")
def fitted() -> SIVAE:
    # one SIVAE trained once; tests read it and copy its AnnData before changing anything
    return _fit()


@pytest.fixture(scope="module")
def fitted_vae() -> VAE:
    return _fit(VAE)


@pytest.fixture(scope="module")
def fitted_ldvae() -> LDVAE:
    return _fit(LDVAE)


@contextmanager
def refused(match: str) -> Iterator[pytest.ExceptionInfo]:
    """The block raises sivae.InputError, one sentence (one line) mentioning ``match``."""
    with pytest.raises(InputError, match=match) as info:
        yield info
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# -- outputs --------------------------------------------------------------------------------------
def test_sivae_writes_its_outputs(fitted):
    adata = fitted.adata
    z = adata.obsm[KEYS.CELL_EMBEDDING]
    assert z.shape == (N_CELLS, K) and np.isfinite(z).all()
    loadings = adata.varm[KEYS.LOADINGS]
    assert loadings.shape == (N_GENES, K) and np.isfinite(loadings).all()
    centrality = np.asarray(adata.var[KEYS.CENTRALITY])
    assert centrality.shape == (N_GENES,)
    assert np.isfinite(centrality).all() and (centrality <= 1.0).all()
    split = adata.obs[KEYS.SPLIT]
    assert set(split) == {"train", "validation"}
    assert (split == "validation").sum() == round(0.1 * N_CELLS)
    summary = adata.uns[KEYS.UNS]
    assert summary["model"] == "sivae"
    assert summary["params"]["n_latent"] == K and summary["params"]["c_red"] == 10
    assert {"recon", "total", "val"} <= set(summary["losses"])
    assert len(summary["losses"]["total"]) == len(fitted.history) > 0
    # the getters return what was written
    np.testing.assert_array_equal(fitted.get_cell_embedding(), z)
    np.testing.assert_array_equal(fitted.get_loadings(), loadings)


@pytest.mark.parametrize("cls", [VAE, LDVAE])
def test_baselines_write_under_their_own_keys(cls, fitted_vae, fitted_ldvae):
    model = fitted_vae if cls is VAE else fitted_ldvae
    adata, keys = model.adata, BASELINE_KEYS[cls]
    assert adata.obsm[keys.cell_embedding].shape == (N_CELLS, K)
    assert np.isfinite(adata.var[keys.centrality]).all()
    assert adata.uns[keys.uns]["model"] == keys.uns
    assert KEYS.CELL_EMBEDDING not in adata.obsm  # never siVAE's keys
    if cls is VAE:
        assert model.get_loadings() is None and not adata.varm.keys()
    else:
        assert adata.varm[keys.loadings].shape == (N_GENES, K)
        np.testing.assert_array_equal(model.get_loadings(), adata.varm[keys.loadings])


@pytest.mark.parametrize("variant", [{"linear": True}, {"gamma": 0.0}, {"likelihood": "nb"}],
                         ids=["linear", "gamma0", "nb"])
def test_sivae_variants_train_and_write_outputs(variant):
    model = _fit(**variant)
    adata = model.adata
    assert adata.obsm[KEYS.CELL_EMBEDDING].shape == (N_CELLS, K)
    assert adata.varm[KEYS.LOADINGS].shape == (N_GENES, K)
    centrality = np.asarray(adata.var[KEYS.CENTRALITY])
    assert np.isfinite(centrality).all() and (centrality <= 1.0).all()
    assert np.isfinite(adata.uns[KEYS.UNS]["losses"]["total"]).all()
    for key, value in variant.items():
        assert adata.uns[KEYS.UNS]["params"][key] == value


# -- seeds ----------------------------------------------------------------------------------------
def test_same_seed_is_bit_identical_and_another_seed_differs(fitted):
    again = _fit()
    np.testing.assert_array_equal(again.get_cell_embedding(), fitted.get_cell_embedding())
    np.testing.assert_array_equal(again.get_loadings(), fitted.get_loadings())
    np.testing.assert_array_equal(again.val_idx, fitted.val_idx)
    other = _fit(seed=1)
    assert not np.allclose(other.get_cell_embedding(), fitted.get_cell_embedding())
    assert not np.allclose(other.get_loadings(), fitted.get_loadings())


# -- files ----------------------------------------------------------------------------------------
def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {FILES.CONFIG, FILES.WEIGHTS, FILES.PREPROCESS}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    for loaded in (SIVAE.load(tmp_path / "model", fitted.adata.copy(), device="cpu"),
                   load_model(str(tmp_path / "model"), fitted.adata.copy(), device="cpu")):
        assert type(loaded) is SIVAE and loaded.is_trained
        assert loaded.config == fitted.config
        np.testing.assert_array_equal(loaded.get_cell_embedding(), fitted.get_cell_embedding())
        np.testing.assert_array_equal(loaded.get_loadings(), fitted.get_loadings())


@pytest.mark.parametrize("cls", [VAE, LDVAE])
def test_load_model_picks_the_class(cls, fitted_vae, fitted_ldvae, tmp_path):
    model = fitted_vae if cls is VAE else fitted_ldvae
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", model.adata.copy(), device="cpu")
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.get_cell_embedding(), model.get_cell_embedding())
    if cls is LDVAE:
        np.testing.assert_array_equal(loaded.get_loadings(), model.get_loadings())
    with refused("holds a .* model, not sivae; load it with sivae.load_model"):
        SIVAE.load(tmp_path / "model", model.adata.copy(), device="cpu")


def test_save_refuses_an_existing_folder_unless_overwrite(fitted, fitted_vae, tmp_path):
    path = tmp_path / "model"
    fitted_vae.save(path)
    with refused(r"exists; pass --force \(overwrite=True\)"):
        fitted.save(path)
    assert type(load_model(path, fitted.adata, device="cpu")) is VAE  # untouched
    fitted.save(path, overwrite=True)
    assert type(load_model(path, fitted.adata, device="cpu")) is SIVAE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_save_refuses_a_parent_it_cannot_write(fitted, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with refused("cannot write"):
        fitted.save(tmp_path / "a_file" / "model")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with refused("cannot write"):
            fitted.save(locked / "model")
    fitted.save(tmp_path / "missing" / "model")  # missing folders above it are created
    assert (tmp_path / "missing" / "model" / FILES.WEIGHTS).is_file()


@pytest.fixture
def saved(fitted, tmp_path) -> pathlib.Path:
    path = tmp_path / "model"
    fitted.save(path)
    return path


def test_load_refuses_other_genes_and_another_gene_order(fitted, saved):
    renamed = fitted.adata.copy()
    renamed.var_names = [f"other{j}" for j in range(N_GENES)]
    with refused(r"\d+ of the model's features are missing"):
        load_model(saved, renamed, device="cpu")
    fewer = fitted.adata[:, 1:].copy()
    with refused("1 of the model's features are missing and 0 are new"):
        SIVAE.load(saved, fewer, device="cpu")
    reordered = fitted.adata[:, fitted.adata.var_names[::-1]].copy()
    with refused(r"reorder it with adata\[:, features\]"):
        load_model(saved, reordered, device="cpu")


@pytest.mark.parametrize("content", ["{not json", '"a string"', "[1, 2]", '{"model": "sivae"}',
                                     "3", "null",
                                     '{"model": "sivae", "config": {"bogus": 1}, "feature_names": []}',
                                     '{"model": "sivae", "config": {}, "feature_names": 3}'])
def test_load_refuses_a_corrupt_config(fitted, saved, content):
    (saved / FILES.CONFIG).write_text(content)
    with refused("is corrupt or not a sivae config"):
        load_model(saved, fitted.adata, device="cpu")


def test_load_refuses_missing_files(fitted, saved):
    (saved / FILES.WEIGHTS).unlink()
    with refused("is not a saved sivae model"):
        load_model(saved, fitted.adata, device="cpu")
    with refused("does not exist"):
        SIVAE.load(saved.parent / "nowhere", fitted.adata, device="cpu")
    with refused("is a file, not a model folder"):
        SIVAE.load(saved / FILES.CONFIG, fitted.adata, device="cpu")


def test_load_refuses_a_truncated_weights_file(fitted, saved):
    weights = saved / FILES.WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with refused("is not a valid safetensors file"):
        load_model(saved, fitted.adata, device="cpu")


class _Touch:
    # unpickling this runs pathlib.Path.touch(marker): the pickle is live, not inert data
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_load_never_unpickles_a_weights_file(fitted, saved, tmp_path):
    armed, executed = tmp_path / "armed", tmp_path / "executed"
    torch.save({"module.weight": _Touch(armed)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert armed.exists()  # the payload does run when unpickled
    torch.save({"module.weight": _Touch(executed)}, saved / FILES.WEIGHTS)
    with refused("not a valid safetensors file"):
        load_model(saved, fitted.adata, device="cpu")
    with refused("not a valid safetensors file"):
        SIVAE.load(saved, fitted.adata, device="cpu")
    assert not executed.exists()
    # a bare pickle (no torch zip around it) is refused the same way
    (saved / FILES.WEIGHTS).write_bytes(pickle.dumps({"w": _Touch(executed)}))
    with refused("not a valid safetensors file"):
        load_model(saved, fitted.adata, device="cpu")
    assert not executed.exists()


# -- embedding new data ---------------------------------------------------------------------------
def test_embedding_of_shuffled_genes_matches(fitted):
    rng = np.random.default_rng(1)
    other = fitted.adata[:, rng.permutation(N_GENES)].copy()
    other = AnnData(np.hstack([other.X, rng.normal(size=(N_CELLS, 1)).astype(np.float32)]),
                    obs=other.obs, var=pd.DataFrame(index=[*other.var_names, "extra"]))
    np.testing.assert_array_equal(fitted.get_cell_embedding(other), fitted.get_cell_embedding())
    sparse = other.copy()
    sparse.X = sp.csr_matrix(sparse.X)
    np.testing.assert_allclose(fitted.get_cell_embedding(sparse), fitted.get_cell_embedding(), atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_embedding_ignores_gene_order_and_extra_genes(fitted, data):
    cells = data.draw(st.lists(st.integers(0, N_CELLS - 1), min_size=1, max_size=20, unique=True))
    genes = data.draw(st.permutations(range(N_GENES)))
    n_extra = data.draw(st.integers(0, 3))
    X = fitted.adata.X[np.ix_(cells, genes)]
    X = np.hstack([X, np.ones((len(cells), n_extra), np.float32)])
    names = [*fitted.adata.var_names[genes], *(f"extra{i}" for i in range(n_extra))]
    other = AnnData(X, var=pd.DataFrame(index=names))
    # other batch shapes may round differently in the last bit
    np.testing.assert_allclose(fitted.get_cell_embedding(other), fitted.get_cell_embedding()[cells],
                               rtol=1e-5, atol=1e-6)


def test_embedding_refuses_missing_genes_and_bad_values(fitted):
    with refused("2 of the model's 30 features are missing"):
        fitted.get_cell_embedding(fitted.adata[:, 2:].copy())
    bad = fitted.adata.copy()
    bad.X[3, 4] = np.nan
    with refused("1 NaN values in adata.X"):
        fitted.get_cell_embedding(bad)
    with refused("expected an AnnData"):
        fitted.get_cell_embedding(fitted.adata.X)


# -- bad input at construction --------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SIVAE, VAE])
@pytest.mark.parametrize(("value", "word"), [(np.nan, "1 NaN values"), (np.inf, "1 infinite values"),
                                             (-np.inf, "1 infinite values")])
def test_non_finite_values_are_refused(cls, value, word):
    adata = _adata()
    adata.X[5, 7] = value
    with refused(rf"{word} in adata\.X"):
        cls(adata, **TINY)


@pytest.mark.parametrize("cls", [SIVAE, LDVAE])
@pytest.mark.parametrize(("value", "word"), [(-1.0, "1 negative values"), (2.5, "1 non-integer values")])
def test_nb_refuses_what_is_not_counts(cls, value, word):
    adata = _adata()
    adata.layers[KEYS.COUNTS][3, 4] = value
    kwargs = {"likelihood": "nb"} if cls is SIVAE else {}
    with refused(rf"{word} in adata\.layers\['counts'\]"):
        cls(adata, **TINY, **kwargs)
    SIVAE(adata, **SIVAE_TINY)  # gaussian models never read the counts


@pytest.mark.parametrize("cls", [SIVAE, LDVAE])
def test_nb_needs_counts(cls):
    adata = _adata()
    del adata.layers[KEYS.COUNTS]
    kwargs = {"likelihood": "nb"} if cls is SIVAE else {}
    with refused(r"needs raw counts in adata\.layers\['counts'\]"):
        cls(adata, **TINY, **kwargs)


@pytest.mark.parametrize("fill", [0.0, 1.5], ids=["all_zero", "constant"])
def test_constant_features_are_refused(fill):
    adata = _adata()
    adata.X[:, 6] = fill
    adata.X[:, 9] = fill
    with refused("2 features are constant across cells .*gene6.*sivae.pp.preprocess"):
        SIVAE(adata, **SIVAE_TINY)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
@pytest.mark.filterwarnings("ignore:Variable names are not unique")
@pytest.mark.parametrize("axis", ["obs", "var"])
def test_duplicate_names_are_refused(axis):
    adata = _adata()
    names = list(getattr(adata, f"{axis}_names"))
    names[3] = names[0]
    setattr(adata, f"{axis}_names", names)
    kind = "cell" if axis == "obs" else "feature"
    with refused(rf"1 duplicate {kind} names .*{axis}_names_make_unique"):
        SIVAE(adata, **SIVAE_TINY)


@pytest.mark.parametrize(
    ("cls", "n_cells", "kwargs", "word"),
    [
        (VAE, 40, {"n_latent": 40}, r"at least 41 training cells \(n_latent=40, c_red=None\)"),
        (SIVAE, 40, {"c_red": 50}, r"at least 50 training cells \(n_latent=2, c_red=50\)"),
        (SIVAE, 19, {}, "would get 18 training and 1 held-out cells"),  # floor(1.9) = 1 < 2
        (VAE, 9, {"holdout_fraction": 0.0}, "at least 10 training cells"),
    ],
    ids=["n_latent", "c_red", "holdout", "min_train"],
)
def test_too_few_cells_are_refused_and_the_stated_minimum_is_enough(cls, n_cells, kwargs, word):
    tiny = SIVAE_TINY if cls is SIVAE else TINY
    with refused(rf"{n_cells} cells are too few.*{word}") as info:
        cls(_adata(n_cells, seed=1), **{**tiny, **kwargs})
    needed = int(re.search(r"i\.e\. at least (\d+) cells", str(info.value)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # c_red may be lowered to the number of genes
        cls(_adata(needed, seed=1), **{**tiny, **kwargs})


@pytest.mark.parametrize("shape", [(0, N_GENES), (N_CELLS, 0), (0, 0)])
def test_empty_data_is_refused(shape):
    with refused(r"adata has 0 (cells|features)"):
        SIVAE(AnnData(np.zeros(shape, np.float32)), **SIVAE_TINY)


@pytest.mark.parametrize("cls", [SIVAE, VAE])
def test_not_an_anndata_is_refused(cls):
    with refused("expected an AnnData, got ndarray"):
        cls(_adata().X, **TINY)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"n_latnet": 3}, r"unknown arguments \['n_latnet'\]"),
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"gamma": -0.1}, "gamma must be a finite number >= 0"),
        ({"n_latent": 0}, "n_latent must be at least 1"),
        ({"variance": "gene"}, "variance must be one of"),
        ({"holdout_fraction": 0.5}, r"holdout_fraction must be in \[0, 0.5\)"),
        ({"encoder_hidden": (16, 0)}, "must be positive integers"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_bad_arguments_are_refused(kwargs, word):
    with refused(word):
        SIVAE(_adata(), **{**SIVAE_TINY, **kwargs})


def test_baselines_refuse_arguments_they_fix():
    with refused("VAE fixes gamma"):
        VAE(_adata(), gamma=0.1, **TINY)
    with refused("LDVAE fixes likelihood"):
        LDVAE(_adata(), likelihood="gaussian", **TINY)


def test_nan_gamma_is_refused():
    with refused("gamma must be a finite number >= 0"):
        SIVAE(_adata(), **{**SIVAE_TINY, "gamma": float("nan")})


def test_baselines_refuse_unknown_arguments():
    with refused(r"VAE got unknown arguments \['bogus'\]"):
        VAE(_adata(), bogus=1, **TINY)
    with refused(r"LDVAE got unknown arguments \['bogus'\]"):
        LDVAE(_adata(), bogus=1, **TINY)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused():
    with refused("no CUDA GPU is available"):
        SIVAE(_adata(), **{**SIVAE_TINY, "device": "cuda"})


def test_train_refuses_bad_epochs():
    model = SIVAE(_adata(), **SIVAE_TINY)
    with refused("max_epochs must be at least 1"):
        model.train(max_epochs=0, progress=False)
    assert not model.is_trained and KEYS.CELL_EMBEDDING not in model.adata.obsm


def test_split_is_the_one_check_size_promises():
    # check_size accepts 36 cells for c_red=33 because floor(3.6) = 3 held out leaves 33 for
    # training; the model then holds out round(3.6) = 4 and lowers c_red with a warning
    adata = _adata(36, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = SIVAE(adata, **{**SIVAE_TINY, "c_red": 33})
    assert len(model.val_idx) == math.floor(36 * 0.1)


# -- properties of input handling (construction only) --------------------------------------------
@st.composite
def finite_or_not(draw):
    # a clean z-scored-like matrix, dense or csr, with 0..3 NaN or +-Inf at random positions
    n, m = draw(st.integers(20, 30)), draw(st.integers(5, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, m)).astype(np.float32)
    flat = draw(st.lists(st.integers(0, n * m - 1), max_size=3, unique=True))
    bad = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), min_size=len(flat), max_size=len(flat)))
    X.flat[flat] = bad
    return X, len(flat) > 0


@settings(max_examples=20, deadline=None)
@given(finite_or_not(), st.booleans())
def test_construction_refuses_exactly_the_non_finite(case, sparse):
    X, has_bad = case
    adata = AnnData(sp.csr_matrix(X) if sparse else X)
    if has_bad:
        with refused(r"(NaN|infinite) values in adata\.X"):
            SIVAE(adata, **{**SIVAE_TINY, "c_red": 5})
    else:
        model = SIVAE(adata, **{**SIVAE_TINY, "c_red": 5})
        assert model.feature_x.shape == (X.shape[1], 5)


@st.composite
def counts_or_not(draw):
    # Poisson counts (int64 or float32) with 0..3 entries made negative or fractional
    n, m = draw(st.integers(20, 30)), draw(st.integers(5, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.int64, np.float32]))
    counts = rng.poisson(3.0, size=(n, m)).astype(dtype)
    flat = draw(st.lists(st.integers(0, n * m - 1), max_size=3, unique=True))
    kind = draw(st.sampled_from(["negative", "non-integer"] if dtype is np.float32 else ["negative"]))
    for i in flat:
        counts.flat[i] = -1 - counts.flat[i] if kind == "negative" else counts.flat[i] + 0.5
    return counts, len(flat), kind


@settings(max_examples=20, deadline=None)
@given(counts_or_not(), st.booleans())
def test_nb_construction_refuses_exactly_what_is_not_counts(case, sparse):
    counts, n_bad, kind = case
    X = np.random.default_rng(0).normal(size=counts.shape).astype(np.float32)
    adata = AnnData(X)
    adata.layers[KEYS.COUNTS] = sp.csr_matrix(counts) if sparse else counts
    if n_bad:
        with refused(rf"{n_bad} {kind} values in adata\.layers\['counts'\]"):
            SIVAE(adata, likelihood="nb", **{**SIVAE_TINY, "c_red": 5})
    else:
        SIVAE(adata, likelihood="nb", **{**SIVAE_TINY, "c_red": 5})


def test_public_names():
    assert sivae.SIVAE is SIVAE and sivae.load_model is load_model
    assert issubclass(sivae.InputError, ValueError)


def test_zero_cells_embed_to_an_empty_matrix(fitted):
    assert fitted.get_cell_embedding(fitted.adata[:0].copy()).shape == (0, fitted.config.n_latent)


def test_save_over_a_file_is_refused(fitted, tmp_path):
    path = tmp_path / "model"
    path.write_text("not a model")
    with refused("exists and is a file, not a folder"):
        fitted.save(path, overwrite=True)
    assert path.read_text() == "not a model"
