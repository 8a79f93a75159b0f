"""BackedCellMatrix: rows read from an .h5ad on disk equal the in-memory ones; bad files refused."""

from __future__ import annotations

import pickle
import shutil

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.data.backed import BackedCellMatrix
from sivae.data.loaders import CellMatrix
from sivae.data.transform import RowTransform
from sivae.data.simulate import simulate_large

N_CELLS, N_FEATURES = 200, 30


def _matrix(seed: int = 0) -> sp.csr_matrix:
    # float values, ~15% non-zero, every 7th cell empty (rows with no stored values)
    rng = np.random.default_rng(seed)
    X = sp.random(N_CELLS, N_FEATURES, density=0.15, format="csr", dtype=np.float32, rng=rng)
    X.data = (X.data * 10).astype(np.float32)
    keep = (np.arange(N_CELLS) % 7 != 0).astype(np.float32)
    X = sp.csr_matrix(sp.diags(keep) @ X)
    X.eliminate_zeros()
    assert np.diff(X.indptr)[::7].sum() == 0
    return X


def _counts() -> sp.csr_matrix:
    return sp.csr_matrix(np.random.default_rng(1).poisson(0.5, (N_CELLS, N_FEATURES)),
                         dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("backed")
    adata = ad.AnnData(_matrix(), layers={KEYS.COUNTS: _counts()})
    paths = {}
    for compression in (None, "gzip", "lzf"):
        paths[compression] = folder / f"{compression}.h5ad"
        adata.write_h5ad(paths[compression], compression=compression)
    return {"adata": adata, "paths": paths, "folder": folder}


@pytest.fixture(scope="module")
def backed(files) -> BackedCellMatrix:
    return BackedCellMatrix(files["paths"][None])


@pytest.fixture(scope="module")
def memory(files) -> CellMatrix:
    return CellMatrix(files["adata"].X)


rows_requests = st.lists(st.integers(0, N_CELLS - 1), min_size=0, max_size=80)


@settings(max_examples=60, deadline=None)
@given(idx=rows_requests)
def test_rows_equal_in_memory_rows(backed, memory, idx):
    # random subsets, unsorted, with duplicates: rows come back in the order asked
    idx = np.asarray(idx, dtype=np.int64)
    got = backed.rows(idx)
    assert got.dtype == torch.float32 and got.shape == (len(idx), N_FEATURES)
    assert torch.equal(got, memory.rows(idx))


def test_interface_matches_cell_matrix(backed, memory):
    assert backed.shape == memory.shape and len(backed) == N_CELLS
    assert backed.n_features == N_FEATURES
    assert torch.equal(backed.rows(np.arange(N_CELLS)), memory.rows(np.arange(N_CELLS)))
    np.testing.assert_allclose(backed.row_sums(), memory.row_sums(), rtol=1e-6)
    assert backed.row_sums().dtype == np.float32


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_files_read_the_same(files, memory, compression):
    idx = np.random.default_rng(0).integers(0, N_CELLS, 64)
    with BackedCellMatrix(files["paths"][compression]) as m:
        assert torch.equal(m.rows(idx), memory.rows(idx))


def test_layer(files):
    counts = CellMatrix(files["adata"].layers[KEYS.COUNTS])
    m = BackedCellMatrix(files["paths"][None], layer=KEYS.COUNTS)
    idx = np.array([5, 3, 5, 199, 0])
    assert torch.equal(m.rows(idx), counts.rows(idx))
    assert np.array_equal(m.row_sums(), counts.row_sums())


def test_row_sums_span_many_steps(files, memory, monkeypatch):
    # row_sums reads the values a step at a time; rows straddling steps must still add up
    import sivae.data.backed as backed_module

    monkeypatch.setattr(backed_module, "_ROW_SUMS_STEP", 17)
    m = BackedCellMatrix(files["paths"][None])
    np.testing.assert_allclose(m.row_sums(), memory.row_sums(), rtol=1e-6)


def test_simulated_file(tmp_path):
    path = simulate_large(tmp_path / "sim.h5ad", 1_500, 80, chunk_cells=400, progress=False)
    counts = CellMatrix(ad.read_h5ad(path).X)
    m = BackedCellMatrix(path)
    idx = np.random.default_rng(2).integers(0, 1_500, 300)
    assert torch.equal(m.rows(idx), counts.rows(idx))
    assert np.array_equal(m.row_sums(), counts.row_sums())


def test_transform_is_applied_to_each_batch_as_in_memory(backed, memory, files):
    dense = memory.rows(np.arange(N_CELLS)).numpy()
    columns = np.array([5, 0, 7])
    mean, std = dense[:, columns].mean(0), dense[:, columns].std(0) + 0.1
    transform = RowTransform(columns=columns, mean=mean, std=std, max_value=2.0)
    on_disk = BackedCellMatrix(backed.path, transform=transform)
    in_memory = CellMatrix(files["adata"].X, transform=transform)
    assert on_disk.shape == in_memory.shape == (N_CELLS, 3)
    idx = np.array([9, 2, 2, 150])
    expected = np.clip((dense[idx][:, columns] - mean) / std, -2.0, 2.0)
    np.testing.assert_allclose(on_disk.rows(idx).numpy(), expected, rtol=1e-5)
    assert torch.equal(on_disk.rows(idx), in_memory.rows(idx))
    np.testing.assert_allclose(on_disk.row_sums(), memory.row_sums(), rtol=1e-6)  # untransformed


def test_survives_pickling(backed, memory):
    # worker processes receive a copy without the open file and open their own
    copy = pickle.loads(pickle.dumps(backed))
    assert torch.equal(copy.rows(np.array([4, 1])), memory.rows(np.array([4, 1])))


def test_out_of_range_rows(backed):
    with pytest.raises(IndexError):
        backed.rows(np.array([N_CELLS]))


# -- refusals -------------------------------------------------------------------------------------
def _one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and ";" in text  # what is wrong; what to do
    return text


def test_refuses_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        BackedCellMatrix(tmp_path / "nope.h5ad")
    _one_sentence(err)


def test_refuses_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "text.h5ad"
    path.write_text("cells,genes\n")
    with pytest.raises(InputError, match="not a readable HDF5") as err:
        BackedCellMatrix(path)
    _one_sentence(err)


@pytest.mark.parametrize(("X", "kind"), [
    (np.ones((6, 4), dtype=np.float32), "dense"),
    (sp.csc_matrix(np.eye(6, 4, dtype=np.float32)), "CSC"),
])
def test_refuses_a_matrix_that_is_not_csr(tmp_path, X, kind):
    path = tmp_path / "x.h5ad"
    ad.AnnData(X).write_h5ad(path)
    with pytest.raises(InputError, match=f"{kind}.*backed training needs a CSR matrix") as err:
        BackedCellMatrix(path)
    assert "csr_matrix" in _one_sentence(err)


def test_refuses_missing_layer(files):
    with pytest.raises(InputError, match=r"no layers/spliced \(layers: counts\)") as err:
        BackedCellMatrix(files["paths"][None], layer="spliced")
    _one_sentence(err)


def test_refuses_unavailable_compression_filter(files, tmp_path):
    # 32015 is zstd's registered HDF5 filter id, not built into h5py
    path = tmp_path / "zstd.h5ad"
    shutil.copy(files["paths"][None], path)
    with h5py.File(path, "a") as f:
        values = f["X/data"][:]
        del f["X/data"]
        f["X"].create_dataset("data", data=values, chunks=(64,), compression=32015,
                              allow_unknown_filter=True)
    with pytest.raises(InputError, match="filter 32015.*cannot read") as err:
        BackedCellMatrix(path)
    assert "gzip" in _one_sentence(err)


@pytest.mark.parametrize("edit", ["shape", "indptr", "obs"])
def test_refuses_inconsistent_shapes(files, tmp_path, edit):
    path = tmp_path / "bad.h5ad"
    shutil.copy(files["paths"][None], path)
    with h5py.File(path, "a") as f:
        if edit == "shape":
            f["X"].attrs["shape"] = (N_CELLS + 1, N_FEATURES)
        elif edit == "indptr":
            indptr = f["X/indptr"][:]
            del f["X/indptr"]
            f["X"]["indptr"] = indptr[:-5]
        else:
            index = f["obs"].attrs["_index"]
            names = f["obs"][index][:]
            del f["obs"][index]
            f["obs"][index] = names[:-1]
    with pytest.raises(InputError, match="write it again") as err:
        BackedCellMatrix(path)
    _one_sentence(err)


@pytest.mark.parametrize(("transform", "match"), [
    (lambda: RowTransform(mean=np.zeros(N_FEATURES - 1), std=np.ones(N_FEATURES - 1)),
     f"mean has {N_FEATURES - 1} values but the matrix has {N_FEATURES}"),
    (lambda: RowTransform(columns=[0, N_FEATURES]), "must index the matrix"),
    (lambda: RowTransform(library_size=np.ones(3)), "library_size has 3 values"),
])
def test_refuses_a_transform_that_does_not_fit(files, transform, match):
    with pytest.raises(InputError, match=match):
        BackedCellMatrix(files["paths"][None], transform=transform())
