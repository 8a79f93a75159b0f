"""simulate_large: chunked writing, reproducibility, planted cell types; `sivae simulate-large`."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.cli import main
from sivae.data import simulate
from sivae.data.simulate import simulate_large

N_CELLS, N_FEATURES, N_PROGRAMS = 3_000, 500, 10


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> ad.AnnData:
    path = tmp_path_factory.mktemp("sim") / "chunked.h5ad"
    simulate_large(path, N_CELLS, N_FEATURES, n_programs=N_PROGRAMS, chunk_cells=700, seed=3,
                   progress=False)
    return ad.read_h5ad(path)


def _one_chunk(path, **kwargs) -> ad.AnnData:
    options = {"n_programs": N_PROGRAMS, "chunk_cells": N_CELLS, "seed": 3, "progress": False}
    simulate_large(path, N_CELLS, N_FEATURES, **{**options, **kwargs})
    return ad.read_h5ad(path)


def test_same_data_whatever_the_chunk_size(chunked, tmp_path):
    whole = _one_chunk(tmp_path / "whole.h5ad")
    assert isinstance(chunked.X, sp.csr_matrix) and chunked.shape == (N_CELLS, N_FEATURES)
    assert (chunked.X != whole.X).nnz == 0
    assert chunked.obs.equals(whole.obs) and chunked.var.equals(whole.var)


def test_small_blocks_are_chunk_size_independent_too(tmp_path, monkeypatch):
    # cells with many counts are generated in blocks of fewer cells; the blocks still fix the data
    monkeypatch.setattr(simulate, "_MAX_BLOCK_COUNTS", 1_000)
    assert simulate._plan(N_FEATURES, N_PROGRAMS, 0.05, 4.0, 0).block_cells < 100
    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    for path, chunk in zip(paths, (77, 1_000)):
        simulate_large(path, 1_000, N_FEATURES, chunk_cells=chunk, progress=False)
    a, b = (ad.read_h5ad(path) for path in paths)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)


def test_compressed_file_holds_the_same_data(chunked, tmp_path):
    gz = _one_chunk(tmp_path / "gz.h5ad", compression="gzip")
    assert (chunked.X != gz.X).nnz == 0


def test_another_seed_gives_other_data(chunked, tmp_path):
    other = _one_chunk(tmp_path / "other.h5ad", seed=4)
    assert (chunked.X != other.X).nnz > 0


def test_counts_and_labels(chunked):
    X = chunked.X
    assert X.dtype == np.float32 and X.has_canonical_format
    assert X.data.min() > 0 and np.array_equal(X.data, np.round(X.data))
    assert X.nnz / (N_CELLS * N_FEATURES) == pytest.approx(0.05, rel=0.15)  # the default density
    types = chunked.obs[KEYS.CELL_TYPE]
    assert list(types.cat.categories) == [f"type{t}" for t in range(N_PROGRAMS)]
    assert types.value_counts().min() > 0.5 * N_CELLS / N_PROGRAMS
    programs = chunked.var[KEYS.PROGRAM]
    assert list(programs.cat.categories) == list(types.cat.categories)
    assert programs.value_counts().tolist() == [N_FEATURES // N_PROGRAMS] * N_PROGRAMS
    assert chunked.uns[KEYS.SIMULATE_LARGE]["seed"] == 3
    assert chunked.obs_names.is_unique and chunked.var_names.is_unique


def test_planted_types_are_recoverable(chunked):
    # mean count of each type (rows) on each program's genes (columns), relative to the column's
    # median over types: the planted fold (4) on the diagonal, about 1 elsewhere
    X = chunked.X.toarray()
    types = chunked.obs[KEYS.CELL_TYPE].cat.codes.to_numpy()
    programs = chunked.var[KEYS.PROGRAM].cat.codes.to_numpy()
    means = np.array([[X[types == t][:, programs == p].mean() for p in range(N_PROGRAMS)]
                      for t in range(N_PROGRAMS)])
    relative = means / np.median(means, axis=0)
    assert np.all(np.diag(relative) > 3)
    assert np.all(relative[~np.eye(N_PROGRAMS, dtype=bool)] < 1.5)


def test_writes_chunks_never_the_whole_matrix(tmp_path, monkeypatch):
    written: list[int] = []
    append = simulate._append

    def spy(data, indices, indptr, X):
        written.append(X.shape[0])
        append(data, indices, indptr, X)

    monkeypatch.setattr(simulate, "_append", spy)
    simulate_large(tmp_path / "x.h5ad", 2_500, 40, chunk_cells=600, progress=False)
    assert written == [600, 600, 600, 600, 100]


def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate, "_append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate_large(tmp_path / "x.h5ad", 100, 20, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "n_cells must be a positive integer"),
        ({"n_features": -5}, "n_features must be a positive integer"),
        ({"n_cells": 10.5}, "n_cells must be a positive integer"),
        ({"chunk_cells": 0}, "chunk_cells must be a positive integer"),
        ({"n_programs": 30}, "exceeds n_features"),
        ({"density": 0.0}, "density must be"),
        ({"density": 0.9}, "density must be"),
        ({"fold": 0.5}, "fold must be"),
        ({"compression": "zstd"}, "compression must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_refuses_bad_arguments(tmp_path, kwargs, match):
    args = {"n_cells": 50, "n_features": 20, **kwargs}
    with pytest.raises(InputError, match=match):
        simulate_large(tmp_path / "x.h5ad", args.pop("n_cells"), args.pop("n_features"),
                       progress=False, **args)
    assert not (tmp_path / "x.h5ad").exists()


def test_refuses_existing_file_unless_forced(tmp_path):
    path = tmp_path / "x.h5ad"
    path.write_text("keep me")
    with pytest.raises(InputError, match=r"exists; pass --force \(overwrite=True\)"):
        simulate_large(path, 50, 20, progress=False)
    assert path.read_text() == "keep me"
    simulate_large(path, 50, 20, force=True, progress=False)
    assert ad.read_h5ad(path).shape == (50, 20)


def test_refuses_a_name_that_is_not_h5ad(tmp_path):
    with pytest.raises(InputError, match=r"must end in \.h5ad"):
        simulate_large(tmp_path / "x.h5", 50, 20, progress=False)


# -- the command line -----------------------------------------------------------------------------
def test_cli_writes_the_file(tmp_path, capsys):
    out = tmp_path / "big.h5ad"
    argv = ["simulate-large", "--cells", "400", "--features", "60", "-o", str(out),
            "--seed", "2", "--no-progress"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    adata = ad.read_h5ad(out)
    assert adata.shape == (400, 60) and isinstance(adata.X, sp.csr_matrix)
    assert adata.obs[KEYS.CELL_TYPE].nunique() == 10
    expected = _one_chunk_cli_equivalent(tmp_path / "api.h5ad")
    assert (adata.X != expected.X).nnz == 0


def _one_chunk_cli_equivalent(path) -> ad.AnnData:
    simulate_large(path, 400, 60, seed=2, progress=False)
    return ad.read_h5ad(path)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [([], "exists; pass --force"), (["--force", "--density", "0.9"], "density must be")],
)
def test_cli_refuses_in_one_line(tmp_path, capsys, extra, expected):
    out = tmp_path / "big.h5ad"
    out.write_text("keep me")
    argv = ["simulate-large", "--cells", "40", "--features", "10", "-o", str(out), "--no-progress"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sivae: error:") and expected in err and "\n" not in err
    assert out.read_text() == "keep me"
