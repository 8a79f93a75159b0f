"""sivae.data.io: every format reads back what was written; bad paths and files are refused."""

from __future__ import annotations

import gzip
import os

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from anndata import AnnData

import sivae.data.io
from sivae._errors import InputError
from sivae.data.io import read, write_h5ad


@pytest.fixture
def small() -> AnnData:
    # 6 cells x 4 genes of counts, with one all-zero gene and a sparse pattern
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(6, 4)).astype(np.float32)
    X[:, 2] = 0
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(6)])
    var = pd.DataFrame(index=["CD3E", "MS4A1", "LYZ", "NKG7"])
    return AnnData(X=X, obs=obs, var=var)


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _assert_same(read_back: AnnData, small: AnnData) -> None:
    assert list(read_back.obs_names) == list(small.obs_names)
    assert list(read_back.var_names) == list(small.var_names)
    np.testing.assert_array_equal(_dense(read_back.X), small.X)


def _write_tsv_gz(path, rows) -> None:
    with gzip.open(path, "wt") as f:
        f.writelines("\t".join(r) + "\n" for r in rows)


def test_h5ad_round_trip(tmp_path, small):
    path = tmp_path / "a.h5ad"
    write_h5ad(small, path)
    _assert_same(read(path), small)
    assert read(str(path)).shape == (6, 4)  # str paths too


def test_10x_mtx_v3_folder(tmp_path, small):
    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, sp.coo_matrix(small.X.T))  # 10x stores features x cells
    _write_tsv_gz(
        folder / "features.tsv.gz",
        [[f"ENSG{i:05d}", g, "Gene Expression"] for i, g in enumerate(small.var_names)],
    )
    _write_tsv_gz(folder / "barcodes.tsv.gz", [[c] for c in small.obs_names])
    adata = read(folder)
    _assert_same(adata, small)
    assert adata.var["gene_ids"].iloc[0] == "ENSG00000"


def test_10x_mtx_legacy_folder(tmp_path, small):
    folder = tmp_path / "hg19"
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(small.X.T))
    pd.DataFrame({"id": [f"ENSG{i}" for i in range(4)], "sym": small.var_names}).to_csv(
        folder / "genes.tsv", sep="\t", header=False, index=False
    )
    pd.Series(small.obs_names).to_csv(folder / "barcodes.tsv", header=False, index=False)
    _assert_same(read(folder), small)


def test_10x_mtx_folder_missing_file_is_named(tmp_path, small):
    folder = tmp_path / "mtx"
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(small.X.T))
    (folder / "genes.tsv").write_text("ENSG0\tCD3E\n")
    with pytest.raises(InputError, match=r"lacks barcodes\.tsv"):
        read(folder)


def test_folder_that_is_not_10x_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a 10x mtx folder"):
        read(tmp_path)


@pytest.mark.parametrize("name,sep", [("a.csv", ","), ("a.tsv", "\t"), ("a.csv.gz", ",")])
def test_delimited_text_round_trip(tmp_path, small, name, sep):
    path = tmp_path / name
    small.to_df().to_csv(path, sep=sep)  # header: "", genes...; first column: cell names
    _assert_same(read(path), small)


def test_loom_round_trip(tmp_path, small):
    loompy = pytest.importorskip("loompy")
    path = tmp_path / "a.loom"
    loompy.create(
        str(path),
        small.X.T,  # loom stores genes x cells
        row_attrs={"Gene": np.asarray(small.var_names)},
        col_attrs={"CellID": np.asarray(small.obs_names)},
    )
    _assert_same(read(path), small)


def test_loom_written_by_anndata(tmp_path, small):
    pytest.importorskip("loompy")
    path = tmp_path / "b.loom"
    small.write_loom(path)
    _assert_same(read(path), small)


def _write_10x_h5_v3(path, adata: AnnData) -> None:
    # Cell Ranger >= 3 layout: CSC features x cells == CSR cells x features
    X = sp.csr_matrix(adata.X)
    n_features = adata.n_vars
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.asarray(adata.obs_names, dtype="S"))
        m.create_dataset("data", data=X.data.astype(np.int32))
        m.create_dataset("indices", data=X.indices.astype(np.int64))
        m.create_dataset("indptr", data=X.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([n_features, adata.n_obs], dtype=np.int32))
        feat = m.create_group("features")
        feat.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        feat.create_dataset("feature_type", data=np.array([b"Gene Expression"] * n_features))
        feat.create_dataset("genome", data=np.array([b"GRCh38"] * n_features))
        feat.create_dataset("id", data=np.array([f"ENSG{i}" for i in range(n_features)], dtype="S"))
        feat.create_dataset("name", data=np.asarray(adata.var_names, dtype="S"))


def test_10x_h5_round_trip(tmp_path, small):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5_v3(path, small)
    adata = read(path)
    _assert_same(adata, small)
    assert adata.var["gene_ids"].iloc[1] == "ENSG1"


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read(tmp_path / "nope.h5ad")


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"unknown file format '\.xlsx'.*\.h5ad.*\.loom"):
        read(path)


def test_truncated_h5ad(tmp_path, small):
    path = tmp_path / "cut.h5ad"
    small.write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"could not read .*cut\.h5ad.* as h5ad") as info:
        read(path)
    assert info.value.__cause__ is not None  # raised from the library's error


@pytest.mark.parametrize(
    "name,content,fmt",
    [
        ("bad.h5", b"\x89HDF not really", "10x HDF5"),
        ("bad.loom", b"garbage", "loom"),
        ("bad.csv", b",A,B\nc1,1,2\nc2,1\n", "CSV"),
    ],
)
def test_corrupt_files(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"as {fmt}"):
        read(path)


def test_write_refuses_existing_without_force(tmp_path, small):
    path = tmp_path / "out.h5ad"
    write_h5ad(small, path)
    with pytest.raises(InputError, match=r"exists; pass --force \(overwrite=True\)"):
        write_h5ad(small[:2].copy(), path)
    assert anndata.read_h5ad(path).n_obs == 6  # untouched
    write_h5ad(small[:2].copy(), path, force=True)
    assert anndata.read_h5ad(path).n_obs == 2
    assert os.listdir(tmp_path) == ["out.h5ad"]  # no temporary file left behind


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path, small, monkeypatch):
    path = tmp_path / "out.h5ad"
    write_h5ad(small, path)
    before = path.read_bytes()

    def crash(adata, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(sivae.data.io, "write_anndata", crash)  # the h5ad writer write_h5ad uses
    with pytest.raises(KeyboardInterrupt):
        write_h5ad(small, path, force=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.h5ad"]


def test_write_creates_parent_and_refuses_unusable_folder(tmp_path, small):
    write_h5ad(small, tmp_path / "new" / "sub" / "a.h5ad")
    assert (tmp_path / "new" / "sub" / "a.h5ad").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="is not writable"):
        write_h5ad(small, blocker / "a.h5ad")
    with pytest.raises(InputError, match="is a folder"):
        write_h5ad(small, tmp_path)


def test_write_refuses_unwritable_folder(tmp_path, small, monkeypatch):
    # root may write anywhere, so stand in for a read-only folder
    monkeypatch.setattr("sivae.data.io.os.access", lambda *args: False)
    with pytest.raises(InputError, match=r"is not writable; choose a writable location$"):
        write_h5ad(small, tmp_path / "a.h5ad")
    assert os.listdir(tmp_path) == []
