"""Issue 25, parameters: one place checks seeds, counts, rates, devices and memory for the API and
the CLI; silent wrong results (items 9-15) and tracebacks become one sentence.

Each case of the audit is named; CLI cases run through ``sivae.cli.main``. The fitted model is the
release 0.1.0 fixture (31 genes, K=2), so nothing trains here except where a case needs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sivae
import sivae.evaluation
from sivae import _params
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.cli import main

RELEASE = Path(__file__).parent / "data" / "release_0_1_0"
pytestmark = pytest.mark.usefixtures("one_thread")


def _refused(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err


@pytest.fixture(scope="module")
def fitted() -> ad.AnnData:
    return ad.read_h5ad(RELEASE / "fit.h5ad")


@pytest.fixture(scope="module")
def model(fitted):
    return sivae.load_model(RELEASE / "model", fitted, device="cpu")


# -- the checkers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-1, 2**32, 2**70, 2.0, True, "3", None, np.float64(1)])
def test_seed_refuses_what_numpy_cannot_take(value):
    with pytest.raises(InputError, match="seed must be an integer from 0 to 2\\*\\*32 - 1"):
        _params.seed(value)


def test_counts_take_numpy_integers_and_refuse_bools_and_fractions():
    assert _params.count(np.int64(3), "n") == 3 and type(_params.count(np.int32(3), "n")) is int
    for bad in (0, -2, 2.5, 2.0, True, np.bool_(True), "2", None):
        with pytest.raises(InputError, match="n must be a positive integer"):
            _params.count(bad, "n")


@pytest.mark.parametrize("value", [0.0, -1e-3, 1.5, float("inf"), float("nan"), 1e30, "0.1", True])
def test_learning_rates_are_finite_and_at_most_one(value):
    with pytest.raises(InputError, match=r"learning_rate must be a number in \(0, 1\]"):
        _params.learning_rate(value)


@pytest.mark.parametrize("device", ["meta", "tpu", "cuda:99"])
def test_devices_that_cannot_hold_data_are_refused(device):
    with pytest.raises(InputError, match="device"):
        _params.device(device)
    assert str(_params.device("cpu")) == "cpu"


def test_available_memory_honours_the_address_space_limit():
    # a child process under `ulimit -v`: the room left is below the limit, not the machine's RAM
    code = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY))
        from sivae._params import available_memory
        print(available_memory())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(sivae.__file__).parents[1])})
    assert 0 <= float(out.stdout) < 3 * 2**30


def test_check_memory_says_how_much_is_needed():
    with pytest.raises(InputError, match=r"sampling needs about 2\.0 GiB of memory but 1\.0 MiB is available.*; "
                                         r"draw fewer"):
        _params.check_memory(2 * 2**30, "sampling", "draw fewer", available=2**20)
    _params.check_memory(10, "nothing", "", available=2**20)


# -- the CLI options built from them --------------------------------------------------------------
@pytest.mark.parametrize(("extra", "match"), [
    (["--seed", "-1"], "--seed: expected an integer from 0 to 2**32 - 1"),
    (["--method", "shapley", "--seed", str(2**70)], "--seed: expected an integer from 0 to 2**32 - 1"),
    (["--device", "meta"], "cannot hold data"),
    (["--baseline", "inf"], "--baseline: expected a finite number"),
    (["--baseline", "1e300"], "finite in the model's float32"),
])
def test_attribute_options_are_refused_in_one_sentence(tmp_path, capsys, extra, match):
    argv = ["attribute", str(RELEASE / "fit.h5ad"), "--model-dir", str(RELEASE / "model"),
            "-o", str(tmp_path / "a.h5ad")]
    if "--method" not in extra:
        argv += ["--method", "deeplift"]
    _refused([*argv, *extra], capsys, match)
    assert not (tmp_path / "a.h5ad").exists()


@pytest.mark.parametrize("command", ["fit", "embed"])
def test_meta_device_is_refused_by_fit_and_embed(tmp_path, capsys, command):
    if command == "fit":
        argv = ["fit", str(RELEASE / "counts.h5ad"), "-o", str(tmp_path / "o.h5ad"), "--device", "meta",
                "--epochs", "1", "--no-progress"]
    else:
        argv = ["embed", str(RELEASE / "model"), str(RELEASE / "counts.h5ad"), "-o", str(tmp_path / "o.h5ad"),
                "--device", "meta"]
    _refused(argv, capsys, "'meta' cannot hold data")
    assert not any(tmp_path.iterdir())


def test_load_model_refuses_the_meta_device():
    with pytest.raises(InputError, match="'meta' cannot hold data"):
        sivae.load_model(RELEASE / "model", None, device="meta")


@pytest.mark.parametrize(("extra", "match"), [
    (["--n-jobs", "0"], "--n-jobs: expected a positive integer, or -1 for all cores"),
    (["--seed", "-1"], "--seed: expected an integer from 0 to 2**32 - 1"),
])
def test_grn_options_are_refused_in_one_sentence(tmp_path, capsys, extra, match):
    _refused(["grn", str(RELEASE / "fit.h5ad"), "--method", "grnboost2", "-o", str(tmp_path / "n.csv"), *extra],
             capsys, match)
    assert not (tmp_path / "n.csv").exists()


def test_grn_clr_on_15000_genes_is_refused_up_front_under_an_address_space_limit(tmp_path):
    # needs ~7 GB; under `ulimit -v` 6 GB the command says so before allocating
    path = tmp_path / "wide.h5ad"
    ad.AnnData(np.random.default_rng(0).normal(size=(5, 15_000)).astype(np.float32)).write_h5ad(path)
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (6 * 10**9, resource.RLIM_INFINITY))
        from sivae.cli import main
        sys.exit(main(["grn", {str(path)!r}, "-o", {str(tmp_path / "net.csv")!r}]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(Path(sivae.__file__).parents[1]), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2, run.stderr
    err = run.stderr.strip().splitlines()[-1]
    assert "clr network on 15,000 genes" in err and "GiB of memory but" in err and "Traceback" not in run.stderr
    assert not (tmp_path / "net.csv").exists()


# -- item 9: attribute on raw counts ----------------------------------------------------------------
def test_attribute_on_raw_counts_is_refused(tmp_path, capsys, model):
    counts = ad.read_h5ad(RELEASE / "counts.h5ad")[:, list(model.feature_names)].copy()
    counts.write_h5ad(tmp_path / "raw.h5ad")
    _refused(["attribute", str(tmp_path / "raw.h5ad"), "--model-dir", str(RELEASE / "model"),
              "--method", "deeplift", "-o", str(tmp_path / "a.h5ad")], capsys, "not the z-scored input")
    with pytest.raises(InputError, match="model.preprocess"):
        sivae.tl.attribute(model, counts, method="saliency")
    # replaying the preprocessing is the fix, and it is accepted
    attr = sivae.tl.attribute(model, model.preprocess(counts), method="saliency", n_cells=10)
    assert np.isfinite(attr.to_numpy()).all()


# -- item 10: non-finite attributions are never zeroed ------------------------------------------------
def test_attributions_that_overflow_are_refused_not_zeroed(model, fitted):
    attr = sivae.tl.attribute(model, fitted, method="shapley", baseline=3e38)
    with pytest.raises(InputError, match="NaN or infinite"):
        sivae.tl.summarize_attributions(attr)


@pytest.mark.parametrize(("baseline", "match"), [
    (1e300, "finite in the model's float32"), (np.ones(3), r"one value per input of the decoder \(2\)"),
    (np.array([0.0, np.nan]), "finite"), ("zero", "a number"),
])
def test_bad_baselines_are_refused(model, fitted, baseline, match):
    with pytest.raises(InputError, match=match):
        sivae.tl.attribute(model, fitted, method="deeplift", baseline=baseline)


def test_a_baseline_per_input_is_used(model, fitted):
    attr = sivae.tl.attribute(model, fitted, method="integrated_gradients", baseline=np.array([0.5, -0.5]),
                              n_cells=4, n_steps=4)
    assert np.isfinite(attr.to_numpy()).all()


# -- item 11: too few cells to summarise --------------------------------------------------------------
def test_two_cells_with_the_same_attribution_are_refused_not_summarised_as_zeros(tmp_path, capsys):
    # with seed 1 the two sampled cells sit in the same linear region of the decoder
    _refused(["attribute", str(RELEASE / "fit.h5ad"), "--model-dir", str(RELEASE / "model"),
              "--method", "saliency", "--n-cells", "2", "--seed", "1", "-o", str(tmp_path / "a.h5ad")],
             capsys, "the same in all 2 cells")
    assert not (tmp_path / "a.h5ad").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_steps": 10**6, "method": "integrated_gradients"}, "n_steps=1,000,000 needs about"),
    ({"n_steps": 2.5}, "n_steps must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"seed": -1}, "seed must be an integer from 0"),
    ({"n_samples": 0}, "n_samples must be a positive integer"),
])
def test_attribute_numeric_arguments(model, fitted, kwargs, match):
    with pytest.raises(InputError, match=match):
        sivae.tl.attribute(model, fitted, **{"method": "deeplift", **kwargs})


# -- item 12: target_sum ------------------------------------------------------------------------------
@pytest.mark.parametrize("target_sum", [np.inf, 1e300, np.nan, 0, True])
def test_preprocess_refuses_a_target_sum_it_cannot_normalise_to(target_sum):
    adata = ad.read_h5ad(RELEASE / "counts.h5ad")
    with pytest.raises(InputError, match="target_sum must be a number in"):
        sivae.pp.preprocess(adata, target_sum=target_sum)


# -- item 13: the grouped networks' settings ----------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"learning_rate": np.inf}, "learning_rate must be a number in"),
    ({"learning_rate": 1e30}, "learning_rate must be a number in"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"hidden": (0,)}, "hidden must be a non-empty list of positive integer widths"),
    ({"max_cells": -1}, "max_cells must be a positive integer"),
    ({"seed": -1}, "seed must be an integer"),
    ({"n_components": 0}, "n_components must be a positive integer"),
    ({"holdout_fraction": 1.0}, "holdout_fraction must be a number in"),
])
def test_centrality_ground_truth_refuses_bad_settings(fitted, kwargs, match):
    adata = fitted.copy()
    with pytest.raises(InputError, match=match):
        sivae.tl.centrality_ground_truth(adata, **kwargs)
    assert "sivae_ground_truth_centrality" not in adata.var


def test_grouped_training_that_diverges_is_refused(fitted, monkeypatch):
    import sivae.tl._grouped as grouped

    monkeypatch.setattr(grouped.torch.optim, "Adam", _nan_adam)
    with pytest.raises(InputError, match="diverged"):
        sivae.tl.centrality_ground_truth(fitted.copy(), epochs=1)


class _nan_adam(__import__("torch").optim.SGD):
    # an optimiser whose steps poison the weights, as a too-large learning rate does
    def __init__(self, params, lr):
        super().__init__(params, lr=lr)

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data.fill_(float("nan"))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": -1}, "epochs must be a positive integer"),
    ({"learning_rate": np.inf}, "learning_rate must be a number in"),
    ({"n_top": 0}, "n_top must be a positive integer"),
])
def test_compare_neighborhoods_refuses_bad_settings(fitted, kwargs, match):
    with pytest.raises(InputError, match=match):
        sivae.tl.compare_neighborhoods(fitted.copy(), {"siVAE": KEYS.LOADINGS}, k=3, **kwargs)


def test_compare_neighborhoods_refuses_an_all_nan_network(fitted):
    nan = pd.DataFrame(np.full((fitted.n_vars,) * 2, np.nan), index=fitted.var_names, columns=fitted.var_names)
    with pytest.raises(InputError, match="NaN or infinite"):
        sivae.tl.compare_neighborhoods(fitted.copy(), {"siVAE": KEYS.LOADINGS, "nan": nan}, k=3,
                                       query=["g0"])


# -- neighbors on bad loadings (CLI) ---------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "match"), [("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
                                             ("empty", "at least one column")])
def test_neighbors_on_bad_loadings_is_one_sentence(tmp_path, capsys, fitted, edit, match):
    adata = fitted.copy()
    if edit == "empty":
        adata.varm["empty"] = np.zeros((adata.n_vars, 0))
        key = ["--key", "empty"]
    else:
        adata.varm[KEYS.LOADINGS][3, 1] = np.nan if edit == "nan" else np.inf
        key = []
    adata.write_h5ad(tmp_path / "f.h5ad")
    _refused(["neighbors", str(tmp_path / "f.h5ad"), "--gene", "g0", "--k", "3", *key], capsys, match)


# -- item 14 and model.sample ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nb_model():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(60, 12)).astype(np.float32)
    X = np.log1p(counts)
    adata = ad.AnnData(((X - X.mean(0)) / X.std(0)).astype(np.float32))
    adata.layers[KEYS.COUNTS] = counts
    model = sivae.SIVAE(adata, n_latent=2, likelihood="nb", encoder_hidden=(8,), c_red=5, device="cpu")
    return model.train(max_epochs=1, pretrain_epochs=1, progress=False)


@pytest.mark.parametrize("library", [[-1e4, 100.0, 100.0], [np.nan, 1, 1], [np.inf, 1, 1], [0, 1, 1], [1e40, 1, 1],
                                     [100.0, 100.0]])
def test_nb_sample_refuses_library_sizes_that_are_not_counts(nb_model, library):
    with pytest.raises(InputError, match="library"):
        nb_model.sample(3, library=np.array(library))


@pytest.mark.parametrize(("args", "match"), [
    ((10**12,), "drawing 1,000,000,000,000 cells .* needs about"),
    ((10,), "seed must be an integer"),
    ((2.5,), "n_cells must be a positive integer"),
])
def test_sample_refuses_impossible_requests(model, args, match):
    kwargs = {"seed": -1} if args == (10,) else {}
    with pytest.raises(InputError, match=match):
        model.sample(*args, **kwargs)


def test_sample_under_an_address_space_limit_says_how_much_it_needs(model, monkeypatch):
    monkeypatch.setattr(_params, "available_memory", lambda: 6e9)
    with pytest.raises(InputError, match=r"drawing 100,000,000 cells of 31 features needs about .* GiB"):
        model.sample(10**8)


# -- item 15 and agreement --------------------------------------------------------------------------------
def test_agreement_refuses_names_that_collide_as_text(fitted):
    with pytest.raises(InputError, match="both named '1'"):
        sivae.tl.agreement(fitted, {1: KEYS.LOADINGS, "1": -fitted.varm[KEYS.LOADINGS]}, key_added=None)


def test_agreement_refuses_a_constant_interpretation(fitted):
    flat = np.ones((fitted.n_vars, 2))
    with pytest.raises(InputError, match="same for every feature"):
        sivae.tl.agreement(fitted, {"a": KEYS.LOADINGS, "b": flat}, key_added=None)


# -- centrality_ci, gene_relevance, get_cell_embedding ------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [({"n_boot": 10**9}, "needs about"), ({"seed": -1}, "seed must be"),
                                               ({"level": 1.0}, "level must be a number in")])
def test_centrality_ci_refuses_bad_settings(model, kwargs, match):
    with pytest.raises(InputError, match=match):
        sivae.tl.centrality_ci(model, **kwargs)


def test_gene_relevance_refuses_a_basis_that_is_not_a_name(fitted):
    with pytest.raises(InputError, match="basis must be the name of an embedding"):
        sivae.tl.gene_relevance(fitted, basis=3)


def test_backed_cells_are_embedded_with_preprocessing():
    model = sivae.load_model(RELEASE / "model", None, device="cpu")
    backed = ad.read_h5ad(RELEASE / "counts.h5ad", backed="r")
    z = model.get_cell_embedding(backed, preprocess=True)
    expected = model.get_cell_embedding(ad.read_h5ad(RELEASE / "counts.h5ad"), preprocess=True)
    np.testing.assert_array_equal(z, expected)


# -- grn's GRNBoost2 settings ----------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"learning_rate": np.inf}, "learning_rate must be a number in"),
    ({"max_trees": 0}, "max_trees must be a positive integer"),
    ({"subsample": 0.0}, "subsample must be a number in"),
    ({"max_depth": 2.5}, "max_depth must be a positive integer"),
    ({"n_jobs": 0}, "n_jobs must be a positive integer, or -1"),
    ({"seed": 2**40}, "seed must be an integer"),
    ({"max_leaves": 3}, "unknown grnboost2 options"),
])
def test_grnboost2_settings_are_checked_before_any_tree(fitted, kwargs, match):
    with pytest.raises(InputError, match=match):
        sivae.tl.grn(fitted.copy(), method="grnboost2", **kwargs)


def test_grnboost2_takes_the_largest_seed(fitted):
    w = sivae.tl.grn(fitted[:, :4].copy(), method="grnboost2", seed=2**32 - 1, max_trees=5)
    assert np.isfinite(w.to_numpy()).all()


# -- report's reading of uns["sivae"] -------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "match"), [
    ("string", "is a str, not the record of a run"),
    ("seconds", "'training_seconds'] is 'soon'"),
    ("lengths", "columns of different lengths"),
])
def test_report_on_a_damaged_run_record_is_one_sentence(tmp_path, capsys, fitted, edit, match):
    adata = fitted.copy()
    if edit == "string":
        adata.uns[KEYS.UNS] = "hello"
    elif edit == "seconds":
        adata.uns[KEYS.UNS]["training_seconds"] = "soon"
    else:
        losses = adata.uns[KEYS.UNS]["losses"]
        losses["total"] = np.asarray(losses["total"])[:-1]
    adata.write_h5ad(tmp_path / "f.h5ad")
    _refused(["report", str(tmp_path / "f.h5ad"), "-o", str(tmp_path / "r.html")], capsys, match)
    assert not (tmp_path / "r.html").exists()


# -- property tests: every option of the newer commands runs or is refused in one sentence -----------
_HUGE = [2**40, 2**63, 2**70, -(2**63)]
_values = st.one_of(st.integers(-3, 40), st.sampled_from(_HUGE), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["abc", "", "1e999", "-0", "0x10", "nan", "all", "meta", "cpu"]))


def _command(name: str, tmp: Path, fit_file: Path, small_file: Path) -> tuple[list[str], Path | None]:
    # a small, fast run of each command; the option under test is appended
    model = str(RELEASE / "model")
    return {
        "hubs": (["hubs", str(fit_file)], None),
        "neighbors": (["neighbors", str(fit_file), "--gene", "g0"], None),
        "grn": (["grn", str(small_file), "--method", "grnboost2", "-o", str(tmp / "net.csv")], tmp / "net.csv"),
        "attribute": (["attribute", str(fit_file), "--model-dir", model, "--method", "saliency",
                       "-o", str(tmp / "a.h5ad")], tmp / "a.h5ad"),
        "embed": (["embed", model, str(RELEASE / "counts.h5ad"), "-o", str(tmp / "e.h5ad")], tmp / "e.h5ad"),
        "report": (["report", str(fit_file), "-o", str(tmp / "r.html")], tmp / "r.html"),
        "simulate-large": (["simulate-large", "--cells", "30", "--features", "12", "--programs", "3",
                            "-o", str(tmp / "s.h5ad"), "--no-progress"], tmp / "s.h5ad"),
    }[name]


_OPTIONS = [("hubs", "--top"), ("neighbors", "--k"), ("grn", "--top"), ("grn", "--n-jobs"), ("grn", "--seed"),
            ("attribute", "--n-cells"), ("attribute", "--baseline"), ("attribute", "--seed"),
            ("attribute", "--device"), ("embed", "--device"), ("report", "--hubs"),
            ("simulate-large", "--cells"), ("simulate-large", "--features"), ("simulate-large", "--programs"),
            ("simulate-large", "--density"), ("simulate-large", "--chunk-cells"), ("simulate-large", "--seed")]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory, fitted) -> Path:
    # 40 cells x 4 genes: GRNBoost2 in well under a second
    path = tmp_path_factory.mktemp("small") / "small.h5ad"
    fitted[:40, :4].copy().write_h5ad(path)
    return path


@pytest.mark.parametrize("which", _OPTIONS, ids=lambda o: " ".join(o))
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values)
@example(value="-1")
@example(value="0")
@example(value=str(2**70))
@example(value="meta")
def test_new_commands_options_run_or_refuse_in_one_sentence(tmp_path, capsys, small_file, which, value):
    command, option = which
    tmp = tmp_path / "run"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    argv, out = _command(command, tmp, RELEASE / "fit.h5ad", small_file)
    with joblib.parallel_config(backend="threading"):  # grn --n-jobs N: no worker processes to start
        code = main([*argv, option, str(value)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 0:
        if out is not None and out.suffix == ".h5ad":
            written = ad.read_h5ad(out)
            for store in (written.obsm, written.varm):
                assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in store.values())
        elif out is not None and out.suffix == ".csv":
            assert np.isfinite(pd.read_csv(out)["weight"]).all()
        else:
            assert "nan" not in captured.out.lower()
    else:
        assert code == 2 and len(captured.err.strip().splitlines()) == 1, captured.err
        assert out is None or not out.exists()


# -- beyond the audit: other tools' and plots' arguments that gave tracebacks -------------------------
def _other_cases(fitted, model):
    emb, labels, lo = fitted.obsm[KEYS.CELL_EMBEDDING], np.arange(fitted.n_obs) % 3, fitted.varm[KEYS.LOADINGS]

    def encoder_attr():
        return sivae.tl.attribute(model, fitted, method="saliency", target="encoder", n_cells=20)

    return {
        "knn_accuracy seed=-1": (lambda: sivae.tl.knn_accuracy(emb, labels, seed=-1), "seed must be"),
        "knn_accuracy seed=2.5": (lambda: sivae.tl.knn_accuracy(emb, labels, seed=2.5), "seed must be"),
        "stratified_folds seed=2**70": (lambda: sivae.evaluation.stratified_folds(labels, seed=2**70), "seed must be"),
        "default_k n_folds=2**70": (lambda: sivae.evaluation.default_k(labels, n_folds=2**70), "n_folds must be"),
        "summarize sketch_rank=nan": (lambda: sivae.tl.summarize_attributions(encoder_attr(), sketch_rank=np.nan),
                                      "sketch_rank must be a positive integer"),
        "summarize seed=2.5": (lambda: sivae.tl.summarize_attributions(encoder_attr(), seed=2.5), "seed must be"),
        "mrnet of text": (lambda: sivae.tl.mrnet("x"), "numeric genes x genes"),
        "aracne eps=None": (lambda: sivae.tl.aracne(np.eye(3) + 0.1, eps=None), "eps must be"),
        "agreement dims=['a']": (lambda: sivae.tl.agreement(fitted, {"a": KEYS.LOADINGS, "b": -lo}, dims=["a"],
                                                             key_added=None), "each entry of dims"),
        "gene_relevance dims=[0.5]": (lambda: sivae.tl.gene_relevance(fitted, dims=[0.5]), "each entry of dims"),
        "gene_relevance seed=-1": (lambda: sivae.tl.gene_relevance(fitted, seed=-1), "seed must be"),
        "cell_embedding dims=3": (lambda: sivae.pl.cell_embedding(fitted, color="cell_type", dims=3), "dims must be"),
        "feature_embedding dims=(True, False)": (lambda: sivae.pl.feature_embedding(fitted, dims=(True, False)),
                                                 "dims must be"),
        "loadings_image shape=None": (lambda: sivae.pl.loadings_image(fitted, shape=None), "shape must be"),
        "grn max_memory=nan": (lambda: sivae.tl.grn(fitted.copy(), max_memory=np.nan), "max_memory must be"),
    }


@pytest.mark.parametrize("case", ["knn_accuracy seed=-1", "knn_accuracy seed=2.5", "stratified_folds seed=2**70",
                                  "default_k n_folds=2**70", "summarize sketch_rank=nan", "summarize seed=2.5",
                                  "mrnet of text", "aracne eps=None", "agreement dims=['a']",
                                  "gene_relevance dims=[0.5]", "gene_relevance seed=-1", "cell_embedding dims=3",
                                  "feature_embedding dims=(True, False)", "loadings_image shape=None",
                                  "grn max_memory=nan"])
def test_other_numeric_arguments_are_one_sentence(fitted, model, case):
    call, match = _other_cases(fitted, model)[case]
    with pytest.raises(InputError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
