"""What the audit of issue 12 found: nothing the user owns is lost, no run ends in silent NaN.

Each test names the audit's case. The command runs tiny models (a few seconds each)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sivae
from sivae._constants import FILES, KEYS
from sivae._errors import InputError
from sivae.cli import main

TINY = ["--hidden", "8", "--c-red", "5", "--epochs", "1", "--batch-size", "32", "--n-top-genes", "30",
        "--no-progress", "--device", "cpu"]
RELEASE_0_1_0 = Path(__file__).parent / "data" / "release_0_1_0"

pytestmark = pytest.mark.usefixtures("one_thread")


def _counts(n_cells: int = 120, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    rate = np.full((n_cells, n_genes), 5.0)
    rate[np.arange(n_cells) % 2 == 1, :10] *= 4
    adata = ad.AnnData(rng.poisson(rate).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    return adata


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's folder: their input and a file of their own."""
    folder = tmp_path / "p"
    folder.mkdir()
    _counts().write_h5ad(folder / "in.h5ad")
    (folder / "notes.txt").write_text("mine")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err


# -- 1, 2, 3: data loss ---------------------------------------------------------------------------
@pytest.mark.parametrize("model_dir,match", [(".", "did not write"), ("p", "did not write")],
                         ids=["model-dir-dot", "model-dir-is-input-folder"])
def test_force_never_deletes_a_folder_sivae_did_not_write(project, capsys, monkeypatch, model_dir, match) -> None:
    monkeypatch.chdir(project.parent if model_dir == "p" else project)
    before = _snapshot(project)
    src = "p/in.h5ad" if model_dir == "p" else "in.h5ad"
    _refused(["fit", src, "-o", str(project.parent / "out.h5ad"), "--model-dir", model_dir, "--force", *TINY],
             capsys, match)
    assert _snapshot(project) == before


def test_force_never_replaces_a_users_folder(project, tmp_path, capsys) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    _refused(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--model-dir", str(theirs),
              "--force", *TINY], capsys, "did not write")
    assert (theirs / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "out.h5ad").exists()


@pytest.mark.parametrize("backed", [False, True], ids=["in-memory", "backed"])
def test_the_output_may_not_be_the_input(project, capsys, backed) -> None:
    before = _snapshot(project)
    src = str(project / "in.h5ad")
    _refused(["fit", src, "-o", src, "--force", *TINY, *(["--backed"] if backed else [])], capsys, "input")
    assert _snapshot(project) == before


@pytest.mark.parametrize("extra,match", [
    (["--model-dir", "{tmp}/out.h5ad"], "name the same place"),
    (["--model-dir", "{tmp}/m", "--checkpoint-dir", "{tmp}/m"], "name the same place"),
    (["--model-dir", "{tmp}/link"], "symbolic link"),
    (["--checkpoint-dir", "{project}"], "did not write"),
], ids=["model-dir-is-output", "model-dir-is-checkpoint-dir", "model-dir-symlink", "checkpoints-in-input"])
def test_every_destination_is_checked_before_training(project, tmp_path, capsys, monkeypatch, extra, match) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(sivae, "SIVAE", lambda *a, **k: pytest.fail("trained before refusing"))
    argv = [a.format(tmp=tmp_path, project=project) for a in extra]
    _refused(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--force", *argv, *TINY],
             capsys, match)
    assert not (tmp_path / "out.h5ad").exists()


def test_a_failure_while_writing_leaves_no_half_result(project, tmp_path, capsys, monkeypatch) -> None:
    import sivae.models.saving

    def failing_write(path, data):
        raise InputError("the disk is full")

    monkeypatch.setattr(sivae.models.saving, "write_bytes", failing_write)  # the model folder's files
    _refused(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--model-dir",
              str(tmp_path / "model"), *TINY], capsys, "disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # neither output, no temporaries


# -- 4: two runs writing the same outputs ----------------------------------------------------------
def test_a_run_whose_output_appeared_meanwhile_writes_nothing(project, tmp_path, capsys, monkeypatch) -> None:
    out, model_dir = tmp_path / "out.h5ad", tmp_path / "model"
    real_train = sivae.SIVAE.train

    def train_while_another_run_finishes(self, *args, **kwargs):
        result = real_train(self, *args, **kwargs)
        out.write_text("the other run's result")  # the other run wrote its output first
        return result

    monkeypatch.setattr(sivae.SIVAE, "train", train_while_another_run_finishes)
    _refused(["fit", str(project / "in.h5ad"), "-o", str(out), "--model-dir", str(model_dir), *TINY],
             capsys, "exists")
    assert out.read_text() == "the other run's result" and not model_dir.exists()


# -- 6: non-finite settings and results ------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("--gamma", "inf"), ("--learning-rate", "inf"),
                                          ("--learning-rate", "1e6"), ("--seed", "-1"),
                                          ("--seed", str(2**63)), ("--hidden", "1000000000")])
def test_absurd_settings_are_refused_before_training(project, tmp_path, capsys, option, value) -> None:
    out = tmp_path / "out.h5ad"
    assert main(["fit", str(project / "in.h5ad"), "-o", str(out), *TINY, option, value]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(("sivae: error:", "sivae fit: error:"))
    assert not out.exists()


def test_python_api_refuses_absurd_settings() -> None:
    adata = _counts()
    sivae.pp.preprocess(adata, n_top_genes=30)
    for kwargs in ({"learning_rate": 1e6}, {"learning_rate": -1.0}, {"learning_rate": math.nan},
                   {"n_latent": "2"}, {"n_latent": 2.0}, {"gamma": "x"}, {"batch_size": 32.5}):
        with pytest.raises(InputError):
            sivae.SIVAE(adata, encoder_hidden=(8,), c_red=5, **kwargs)
    model = sivae.SIVAE(adata, encoder_hidden=(8,), c_red=5, device="cpu")
    for bad in ("3", 2.5, None):
        with pytest.raises(InputError, match="max_epochs must be an integer"):
            model.train(bad)


def test_counts_beyond_float32_are_refused_with_nb(tmp_path, capsys) -> None:
    adata = _counts()
    adata.X = adata.X.astype(np.float64)
    adata.X[0, 0] = 1e300
    adata.write_h5ad(tmp_path / "huge.h5ad")
    _refused(["fit", str(tmp_path / "huge.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--likelihood", "nb",
              *TINY], capsys, "beyond float32")
    _refused(["fit", str(tmp_path / "huge.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--no-preprocess",
              *TINY], capsys, "beyond float32")
    assert not (tmp_path / "out.h5ad").exists()


def test_a_diverged_model_writes_nothing(project, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sivae.SIVAE, "get_loadings", lambda self: np.full((30, 2), np.nan, dtype=np.float32))
    _refused(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), *TINY], capsys,
             "non-finite")
    assert not (tmp_path / "out.h5ad").exists()


# -- 7: embedding few cells ------------------------------------------------------------------------
@pytest.mark.parametrize("n_cells", [1, 5, 15])
def test_embed_takes_any_number_of_cells_and_all_zero_genes(tmp_path, capsys, n_cells) -> None:
    new = ad.read_h5ad(RELEASE_0_1_0 / "counts.h5ad")[:n_cells].copy()
    new.X[:, 0] = 0  # a gene with no counts in these cells
    new.write_h5ad(tmp_path / "new.h5ad")
    assert main(["embed", str(RELEASE_0_1_0 / "model"), str(tmp_path / "new.h5ad"), "-o",
                 str(tmp_path / "e.h5ad"), "--device", "cpu"]) == 0
    assert ad.read_h5ad(tmp_path / "e.h5ad").obsm[KEYS.CELL_EMBEDDING].shape == (n_cells, 2)


# -- 9, 10: one sentence, modes, stale temporaries, files named as what they are --------------------
def test_a_csv_with_a_text_column_names_it(tmp_path, capsys) -> None:
    (tmp_path / "t.csv").write_text(",A,B\nc1,1,x\nc2,2,y\n")
    _refused(["fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "o.h5ad"), *TINY], capsys, "column 'B'")


def test_a_model_folder_that_is_a_file_is_called_a_file(tmp_path, capsys) -> None:
    (tmp_path / "model").write_text("")
    _refused(["embed", str(tmp_path / "model"), str(RELEASE_0_1_0 / "counts.h5ad"), "-o",
              str(tmp_path / "e.h5ad")], capsys, "is a file")


def test_saved_files_follow_the_umask_and_stale_temporaries_are_removed(tmp_path) -> None:
    fitted = ad.read_h5ad(RELEASE_0_1_0 / "fit.h5ad")
    model = sivae.SIVAE.load(RELEASE_0_1_0 / "model", fitted, device="cpu")
    stale = tmp_path / f".model.sivae-{2**22 + 12345}-abc"  # a pid that is not running
    stale.mkdir()
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "model")
    finally:
        os.umask(old)
    assert not stale.exists()
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / FILES.WEIGHTS).stat().st_mode) == 0o644


# -- property tests: every value trains or is refused in one sentence, never a NaN ------------------
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                     st.sampled_from(["abc", "", "1e999", "-0", "0x10"]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--gamma", "--learning-rate", "--n-latent", "--epochs", "--batch-size",
                               "--c-red", "--seed", "--hidden"]), value=_numbers)
def test_numeric_options_train_or_refuse_in_one_sentence(project, tmp_path, capsys, option, value) -> None:
    out = tmp_path / "prop.h5ad"
    out.unlink(missing_ok=True)
    argv = ["fit", str(project / "in.h5ad"), "-o", str(out), *TINY, "--epochs", "1", option, str(value)]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 0:
        result = ad.read_h5ad(out)
        assert np.all(np.isfinite(result.obsm[KEYS.CELL_EMBEDDING]))
        assert np.all(np.isfinite(result.varm[KEYS.LOADINGS]))
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists()


_json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                                      st.floats(allow_nan=False), st.text(max_size=5)),
                            lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["n_latent", "gamma", "likelihood", "linear", "variance", "encoder_hidden",
                            "decoder_hidden", "feature_input", "c_red", "batch_size", "learning_rate",
                            "seed", "patience", "feature_batch_size", "cell_type_key"]),
       value=_json_values)
def test_config_json_values_load_or_refuse_in_one_sentence(tmp_path, key, value) -> None:
    import shutil

    model_dir = tmp_path / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(RELEASE_0_1_0 / "model", model_dir)
    meta = json.loads((model_dir / FILES.CONFIG).read_text())
    meta["config"][key] = value
    (model_dir / FILES.CONFIG).write_text(json.dumps(meta))
    try:
        model = sivae.load_model(model_dir, None, device="cpu")
    except InputError as err:
        assert "\n" not in str(err)
        return
    z = model.get_cell_embedding(ad.read_h5ad(RELEASE_0_1_0 / "counts.h5ad"), preprocess=True)
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize("sizes", [["--cells", "10", "--features", str(10**12)],
                                   ["--cells", str(10**14), "--features", "1000", "--chunk-cells", "10"]],
                         ids=["features", "cells"])
def test_simulate_large_refuses_sizes_that_cannot_fit(tmp_path, capsys, sizes) -> None:
    _refused(["simulate-large", *sizes, "-o", str(tmp_path / "big.h5ad"), "--no-progress"], capsys, "GiB")
    assert not any(tmp_path.iterdir())


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    from sivae._errors import TrainingDiverged
    from sivae.train.checkpoint import load_checkpoint

    adata = _counts()
    sivae.pp.preprocess(adata, n_top_genes=30)
    model = sivae.SIVAE(adata, encoder_hidden=(8,), c_red=5, batch_size=32, device="cpu")
    real = type(model.module).loss

    def diverging(self, batch, phase="joint"):
        losses = real(self, batch, phase)
        if phase == "joint":
            losses.recon = losses.recon * math.nan
        return losses

    monkeypatch.setattr(type(model.module), "loss", diverging)
    with pytest.raises(TrainingDiverged, match="joint step"):
        model.train(2, pretrain_epochs=1, checkpoint_dir=tmp_path / "ck", checkpoint_every=1, progress=False)
    assert load_checkpoint(tmp_path / "ck").position == {"phase": 2, "epoch": 0}  # the end of step 2
    assert KEYS.CELL_EMBEDDING not in adata.obsm
