"""The `sivae` command line: argument errors, refusals before training, a real fit + embed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sivae
from sivae._constants import FILES, KEYS
from sivae.cli import main


def _counts(n_cells: int = 160, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    # two cell groups whose first 10 genes differ 4-fold: structure an embedding should find
    rng = np.random.default_rng(seed)
    group = np.arange(n_cells) % 2
    rate = np.full((n_cells, n_genes), 5.0)
    rate[group == 1, :10] *= 4
    adata = ad.AnnData(rng.poisson(rate).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs["group"] = pd.Categorical(group.astype(str))
    return adata


@pytest.fixture
def counts_file(tmp_path) -> Path:
    path = tmp_path / "counts.h5ad"
    _counts().write_h5ad(path)
    return path


@pytest.fixture
def no_training(monkeypatch):
    # any attempt to read input or build a model fails the test: refusals must come first
    def forbidden(*args, **kwargs):
        raise AssertionError("reached reading/training although the command should refuse first")

    monkeypatch.setattr(sivae, "SIVAE", forbidden)
    monkeypatch.setattr(sivae, "read", forbidden)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["fit", "in.h5ad"], "-o/--output"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--likelihood", "poisson"], "invalid choice"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--hvg-flavor", "cell_ranger"], "invalid choice"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--hidden", "64,x"], "comma-separated"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--epochs", "0"], "positive integer"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--gamma", "-1"], ">= 0"),
        (["fit", "in.h5ad", "-o", "o.h5ad", "--pretraining", "fast"], "invalid choice"),
        (["embed", "model_dir"], "required"),
    ],
)
def test_argument_errors_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_missing_input_is_one_line(tmp_path, capsys, no_training):
    code = main(["fit", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "out.h5ad")])
    assert code == 2
    err = _error_line(capsys)
    assert err.startswith("sivae: error: input") and "does not exist" in err
    assert len(err.splitlines()) == 1


def test_existing_output_refused_before_training(counts_file, tmp_path, capsys, no_training):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"precious")
    assert main(["fit", str(counts_file), "-o", str(out)]) == 2
    assert "exists; pass --force" in _error_line(capsys)
    assert out.read_bytes() == b"precious"


def test_existing_model_dir_refused_before_training(counts_file, tmp_path, capsys, no_training):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    argv = ["fit", str(counts_file), "-o", str(tmp_path / "out.h5ad"), "--model-dir", str(model_dir)]
    assert main(argv) == 2
    assert "--model-dir" in _error_line(capsys)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--resume"], "--resume needs --checkpoint-dir"),
        ([], "must end in .h5ad"),
    ],
)
def test_other_refusals(counts_file, tmp_path, capsys, no_training, extra, expected):
    out = "out.h5ad" if extra else "out.csv"
    assert main(["fit", str(counts_file), "-o", str(tmp_path / out), *extra]) == 2
    assert expected in _error_line(capsys)


def test_unwritable_output_folder_refused(counts_file, tmp_path, capsys, no_training, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root may write anywhere, so make the folder look read-only rather than chmod it
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    assert main(["fit", str(counts_file), "-o", str(locked / "sub" / "out.h5ad")]) == 2
    assert "is not writable" in _error_line(capsys)


def test_corrupt_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    assert main(["fit", str(bad), "-o", str(tmp_path / "out.h5ad")]) == 2
    err = _error_line(capsys)
    assert err.startswith("sivae: error:") and len(err.splitlines()) == 1


def test_embed_without_model_dir(counts_file, tmp_path, capsys):
    assert main(["embed", str(tmp_path / "none"), str(counts_file), "-o", str(tmp_path / "e.h5ad")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_demo_refuses_existing_outputs(tmp_path, capsys, no_training):
    (tmp_path / FILES.DEMO_NETWORK_H5AD).write_bytes(b"old")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "--force" in _error_line(capsys)


def test_python_dash_m_prints_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "sivae", "fit", str(tmp_path / "x.h5ad"), "-o", str(tmp_path / "o.h5ad")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("sivae: error:")


@pytest.mark.slow
@pytest.mark.parametrize("flavor", [None, "seurat"])
def test_fit_chooses_genes_by_the_flavour_asked(flavor, tmp_path, capsys):
    source, out = tmp_path / "counts.h5ad", tmp_path / "fit.h5ad"
    _counts(n_genes=80).write_h5ad(source)  # enough genes for seurat_v3's loess
    argv = ["fit", str(source), "-o", str(out), "--epochs", "1", "--hidden", "8", "--c-red", "10",
            "--n-top-genes", "40", "--no-progress", "--device", "cpu", "--pretraining", "budget"]
    assert main(argv + (["--hvg-flavor", flavor] if flavor else [])) == 0, capsys.readouterr().err
    record = ad.read_h5ad(out).uns[KEYS.PREPROCESS]
    assert record["highly_variable_flavor"] == (flavor or "seurat_v3") and record["n_features_out"] == 40


def test_fit_then_embed_round_trip(counts_file, tmp_path, capsys):
    out, model_dir = tmp_path / "fit.h5ad", tmp_path / "model"
    fit = ["fit", str(counts_file), "-o", str(out), "--model-dir", str(model_dir), "--epochs", "2",
           "--hidden", "16,8", "--c-red", "20", "--batch-size", "32", "--n-top-genes", "30",
           "--no-progress", "--device", "cpu", "--pretraining", "budget"]
    assert main(fit) == 0, capsys.readouterr().err
    fitted = ad.read_h5ad(out)
    assert fitted.uns["sivae"]["training"]["pretraining"] == "budget"
    assert fitted.obsm[KEYS.CELL_EMBEDDING].shape == (160, 2)
    assert fitted.varm[KEYS.LOADINGS].shape == (30, 2)
    assert KEYS.CENTRALITY in fitted.var
    assert (model_dir / FILES.CONFIG).is_file() and (model_dir / FILES.PREPROCESS).is_file()

    # embedding the training counts again replays the training preprocessing exactly
    again = tmp_path / "again.h5ad"
    assert main(["embed", str(model_dir), str(counts_file), "-o", str(again), "--device", "cpu"]) == 0
    replay = ad.read_h5ad(again)
    np.testing.assert_allclose(replay.obsm[KEYS.CELL_EMBEDDING], fitted.obsm[KEYS.CELL_EMBEDDING],
                               rtol=1e-4, atol=1e-4)

    # new cells on the same genes
    new = tmp_path / "new.h5ad"
    _counts(n_cells=120, seed=1).write_h5ad(new)
    embedded = tmp_path / "new_embedded.h5ad"
    assert main(["embed", str(model_dir), str(new), "-o", str(embedded), "--device", "cpu"]) == 0
    assert ad.read_h5ad(embedded).obsm[KEYS.CELL_EMBEDDING].shape == (120, 2)

    # without the preprocessing record, embed asks for --no-preprocess
    (model_dir / FILES.PREPROCESS).unlink()
    capsys.readouterr()
    assert main(["embed", str(model_dir), str(new), "-o", str(embedded), "--force"]) == 2
    assert "--no-preprocess" in _error_line(capsys)
    assert main(["embed", str(model_dir), str(again), "-o", str(embedded), "--force",
                 "--no-preprocess", "--device", "cpu"]) == 0
    np.testing.assert_allclose(ad.read_h5ad(embedded).obsm[KEYS.CELL_EMBEDDING],
                               fitted.obsm[KEYS.CELL_EMBEDDING], rtol=1e-4, atol=1e-4)

    # a second fit to the same paths is refused, and allowed with --force
    assert main(fit) == 2
    assert main([*fit, "--force"]) == 0


def test_backed_fit_matches_in_memory_and_refuses_a_dense_file(counts_file, tmp_path, capsys, one_thread):
    options = ["--epochs", "2", "--hidden", "16,8", "--c-red", "20", "--batch-size", "32",
               "--n-top-genes", "30", "--no-progress", "--device", "cpu"]
    assert main(["fit", str(counts_file), "-o", str(tmp_path / "x.h5ad"), "--backed", *options]) == 2
    assert "dense matrix, and backed training needs a CSR matrix" in _error_line(capsys)

    sparse_file = tmp_path / "csr.h5ad"
    counts = _counts()
    counts.X = sp.csr_matrix(counts.X)
    counts.write_h5ad(sparse_file)
    memory_out, backed_out, model_dir = tmp_path / "memory.h5ad", tmp_path / "backed.h5ad", tmp_path / "m"
    assert main(["fit", str(counts_file), "-o", str(memory_out), *options]) == 0
    assert main(["fit", str(sparse_file), "-o", str(backed_out), "--backed", "--model-dir",
                 str(model_dir), *options]) == 0, capsys.readouterr().err
    memory, backed = ad.read_h5ad(memory_out), ad.read_h5ad(backed_out)
    assert backed.X is None  # the matrix stays in the input file
    assert list(backed.var_names) == list(memory.var_names)
    np.testing.assert_allclose(backed.obsm[KEYS.CELL_EMBEDDING], memory.obsm[KEYS.CELL_EMBEDDING], atol=1e-3)
    # the saved model embeds the counts again with the backed run's preprocessing
    again = tmp_path / "again.h5ad"
    assert main(["embed", str(model_dir), str(counts_file), "-o", str(again), "--device", "cpu"]) == 0
    np.testing.assert_allclose(ad.read_h5ad(again).obsm[KEYS.CELL_EMBEDDING],
                               backed.obsm[KEYS.CELL_EMBEDDING], atol=1e-4)
