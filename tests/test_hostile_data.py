"""Hostile data (issue 25, items 1, 16, 17, 18 and its one-sentence list): sparse matrices whose
arrays disagree, values that are not real numbers, inputs that are not regular files, names holding
tabs, newlines or formulas. Each is refused in one sentence before any library touches it, or
printed and drawn as written. The corrupt files are crafted with h5py as the audit crafted them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import sivae
from sivae._errors import InputError
from sivae.cli import main
from sivae.data import validate

TINY = ["--hidden", "8", "--c-red", "5", "--epochs", "1", "--batch-size", "32", "--n-top-genes", "30",
        "--no-progress", "--device", "cpu"]
N_CELLS, N_GENES = 80, 40

pytestmark = pytest.mark.usefixtures("one_thread")


def _counts(sparse: bool = True) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(3.0, (N_CELLS, N_GENES)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(X) if sparse else X)
    adata.obs_names = [f"cell{i}" for i in range(N_CELLS)]
    adata.var_names = [f"gene{i}" for i in range(N_GENES)]
    adata.obs["group"] = pd.Categorical(np.where(np.arange(N_CELLS) % 2, "a", "b"))
    return adata


def _refused(argv: list[str], capsys, match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err
    return err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """A tiny fitted model: its input, output h5ad and model folder."""
    folder = tmp_path_factory.mktemp("fitted")
    _counts().write_h5ad(folder / "in.h5ad")
    assert main(["fit", str(folder / "in.h5ad"), "-o", str(folder / "out.h5ad"), "--model-dir",
                 str(folder / "model"), *TINY]) == 0
    out = ad.read_h5ad(folder / "out.h5ad")
    out.X = sp.csr_matrix(out.X)  # fit writes a dense X; the corruptions need a sparse one
    out.write_h5ad(folder / "out_sparse.h5ad")
    return {"in": folder / "in.h5ad", "out": folder / "out_sparse.h5ad", "model": folder / "model"}


# -- crafted corruptions of a stored CSR matrix --------------------------------------------------
def _set(name: str, change: Callable[[np.ndarray], None]) -> Callable[[h5py.Group], None]:
    def edit(group: h5py.Group) -> None:
        values = group[name][:]
        change(values)
        group[name][:] = values
    return edit


def _replace(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.Group], None]:
    def edit(group: h5py.Group) -> None:
        values = make(group[name][:])
        del group[name]
        group[name] = values
    return edit


CORRUPTIONS = {
    # the audit's case: a row pointer past the stored values (heap corruption in scipy)
    "indptr-past-data": _set("indptr", lambda p: p.__setitem__(10, p[-1] + 1000)),
    "index-past-genes": _set("indices", lambda i: i.__setitem__(5, N_GENES)),
    "index-huge": _set("indices", lambda i: i.__setitem__(5, 2**31 - 1)),
    "indptr-decreasing": _set("indptr", lambda p: p.__setitem__(10, p[9] - 3)),
    "index-negative": _set("indices", lambda i: i.__setitem__(5, -1)),
    "indptr-short": _replace("indptr", lambda p: p[:-5]),
    "indptr-not-zero": _set("indptr", lambda p: p.__setitem__(0, 2)),
    "indices-float": _replace("indices", lambda i: i.astype(np.float64)),
    "data-short": _replace("data", lambda d: d[:-3]),
}


def _corrupt(src: Path, dst: Path, how: str, key: str = "X") -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        CORRUPTIONS[how](f[key])
    return dst


def _command(name: str, data: Path, fitted: dict[str, Path], out: Path) -> list[str]:
    return {
        "fit": ["fit", str(data), "-o", str(out / "o.h5ad"), *TINY],
        "fit-backed": ["fit", str(data), "-o", str(out / "o.h5ad"), "--backed", *TINY],
        "embed": ["embed", str(fitted["model"]), str(data), "-o", str(out / "o.h5ad"), "--device", "cpu"],
        "grn": ["grn", str(data), "-o", str(out / "net.csv")],
        "hubs": ["hubs", str(data)],
        "neighbors": ["neighbors", str(data), "--gene", "gene1"],
        "report": ["report", str(data), "-o", str(out / "r.html")],
        "attribute": ["attribute", str(data), "--model-dir", str(fitted["model"]), "--method", "saliency",
                      "-o", str(out / "o.h5ad"), "--device", "cpu"],
    }[name]


@pytest.mark.parametrize("how", ["indptr-past-data", "index-past-genes", "indptr-decreasing", "index-negative"])
@pytest.mark.parametrize("command", ["fit", "embed", "grn", "hubs", "neighbors", "report", "attribute"])
def test_every_command_refuses_a_corrupt_sparse_x(fitted, tmp_path, capsys, command, how) -> None:
    source = fitted["out"] if command in ("hubs", "neighbors", "report", "attribute") else fitted["in"]
    bad = _corrupt(source, tmp_path / "bad.h5ad", how)
    _refused(_command(command, bad, fitted, tmp_path), capsys, "corrupt CSR sparse matrix")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad"]  # nothing written


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
@pytest.mark.parametrize("backed", [False, True], ids=["in-memory", "backed"])
def test_fit_refuses_every_corruption_in_memory_and_backed(fitted, tmp_path, capsys, how, backed) -> None:
    bad = _corrupt(fitted["in"], tmp_path / "bad.h5ad", how)
    _refused(_command("fit-backed" if backed else "fit", bad, fitted, tmp_path), capsys, "corrupt")


def test_the_audits_file_ends_in_one_sentence_not_a_crash(fitted, tmp_path) -> None:
    # in a child process: on the unfixed code this aborted with "double free or corruption"
    bad = _corrupt(fitted["in"], tmp_path / "bad.h5ad", "indptr-past-data")
    run = subprocess.run([sys.executable, "-m", "sivae", "fit", str(bad), "-o", str(tmp_path / "o.h5ad"), *TINY],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "row pointer 10" in run.stderr


@pytest.mark.parametrize("key", ["layers/counts", "obsp/knn", "raw/X"])
def test_a_corrupt_layer_obsp_or_raw_is_refused_too(tmp_path, capsys, key) -> None:
    # anndata subsets every matrix of an AnnData with any adata[...], the unused ones included
    adata = _counts()
    adata.layers["counts"] = adata.X.copy()
    adata.obsp["knn"] = sp.random(N_CELLS, N_CELLS, density=0.1, format="csr", random_state=0)
    adata.raw = adata.copy()
    adata.write_h5ad(tmp_path / "in.h5ad")
    bad = _corrupt(tmp_path / "in.h5ad", tmp_path / "bad.h5ad", "indptr-past-data", key=key)
    err = _refused(["fit", str(bad), "-o", str(tmp_path / "o.h5ad"), *TINY], capsys, "corrupt CSR")
    assert key in err


def test_a_corrupt_csc_matrix_is_refused(tmp_path, capsys) -> None:
    adata = _counts()
    adata.X = sp.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "in.h5ad")
    bad = _corrupt(tmp_path / "in.h5ad", tmp_path / "bad.h5ad", "indptr-past-data")
    _refused(["fit", str(bad), "-o", str(tmp_path / "o.h5ad"), *TINY], capsys, "corrupt CSC sparse matrix")


def test_a_corrupt_10x_h5_is_refused_before_scanpy_reads_it(tmp_path) -> None:
    X = sp.csc_matrix(np.random.default_rng(0).poisson(2.0, (N_GENES, 30)).astype(np.int32))  # genes x cells
    indices = X.indices.copy()
    indices[3] = N_GENES + 7
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"], g["shape"] = X.data, indices, X.indptr, np.array(X.shape)
        g["barcodes"] = np.array([f"c{i}".encode() for i in range(30)])
        feats = g.create_group("features")
        feats["name"] = feats["id"] = np.array([f"g{i}".encode() for i in range(N_GENES)])
        feats["feature_type"] = np.array([b"Gene Expression"] * N_GENES)
        feats["genome"] = np.array([b"x"] * N_GENES)
    with pytest.raises(InputError, match="matrix of .* corrupt CSC"):
        sivae.read(tmp_path / "bad.h5")


@pytest.mark.parametrize("dtype,match", [(np.complex64, "complex numbers"), ("str", "text")])
def test_fit_refuses_an_x_of_text_or_complex_numbers(tmp_path, capsys, dtype, match) -> None:
    adata = _counts(sparse=False)
    adata.write_h5ad(tmp_path / "in.h5ad")
    with h5py.File(tmp_path / "in.h5ad", "r+") as f:
        attrs, values = dict(f["X"].attrs), f["X"][:]
        del f["X"]
        if dtype == "str":
            f.create_dataset("X", data=values.astype(str).astype(object), dtype=h5py.string_dtype())
        else:
            f["X"] = values.astype(dtype)
        f["X"].attrs.update(attrs)
    _refused(["fit", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "o.h5ad"), *TINY], capsys, match)


def test_a_backed_read_never_allocates_for_a_huge_column_index(fitted, tmp_path) -> None:
    from sivae.data.backed import BackedCellMatrix

    bad = _corrupt(fitted["in"], tmp_path / "bad.h5ad", "index-huge")
    with BackedCellMatrix(bad) as matrix, pytest.raises(InputError, match="column index 2147483647"):
        matrix.rows(np.arange(N_CELLS))


# -- AnnData objects handed to the Python API ----------------------------------------------------
def _corrupt_in_memory() -> ad.AnnData:
    adata = _counts()
    adata.X.indptr[10] = adata.X.indptr[-1] + 1000  # the audit's corruption, made in memory
    return adata


@pytest.mark.parametrize("call", [
    lambda a, m: sivae.SIVAE(a, n_latent=2, device="cpu"),
    lambda a, m: m.get_cell_embedding(a),
    lambda a, m: m.get_cell_embedding(a, preprocess=True),
    lambda a, m: sivae.pp.preprocess(a),
    lambda a, m: sivae.pp.scale_features(a),
    lambda a, m: sivae.tl.grn(a),
    lambda a, m: sivae.pl.cell_embedding(a, color="gene1"),
], ids=["SIVAE", "get_cell_embedding", "get_cell_embedding-preprocess", "preprocess", "scale_features",
        "grn", "pl.cell_embedding"])
def test_the_python_api_refuses_a_corrupt_matrix(fitted, call) -> None:
    model = sivae.load_model(fitted["model"], device="cpu")
    adata = _corrupt_in_memory()
    adata.obsm["X_sivae"] = np.zeros((N_CELLS, 2))
    with pytest.raises(InputError, match="corrupt CSR sparse matrix"):
        call(adata, model)


@pytest.mark.parametrize("matrix", [
    sp.csr_matrix((N_CELLS, N_GENES), dtype=np.float32),  # no stored value at all
    sp.csc_matrix(np.eye(5, 3)),
    sp.csr_array(np.eye(4)),
    sp.coo_matrix(np.eye(3)),
    sp.bsr_matrix(np.eye(4), blocksize=(2, 2)),
    sp.csr_matrix((np.ones(2), np.array([0, 2], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64)), shape=(2, 3)),
    sp.csr_matrix((np.ones(2), np.array([0, 2], dtype=np.uint32), np.array([0, 1, 2], dtype=np.uint32)), shape=(2, 3)),
    np.zeros((0, 0)),
    np.ones((3, 2), dtype=bool),
], ids=["empty-csr", "csc", "csr-array", "coo", "bsr", "int64-indices", "uint32-indices", "empty-dense", "bool"])
def test_valid_matrices_pass(matrix) -> None:
    validate.check_matrix(matrix, "adata.X")


def test_a_corrupt_coo_matrix_is_refused() -> None:
    X = sp.coo_matrix(np.eye(3))
    X.col[1] = 7
    with pytest.raises(InputError, match="corrupt COO"):
        validate.check_matrix(X, "adata.X")


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(1, 12), n_cols=st.integers(1, 12), seed=st.integers(0, 2**16),
       how=st.sampled_from(["past", "decrease", "index", "negative", "short", "none"]))
def test_random_matrices_pass_and_any_corruption_is_refused(n_rows, n_cols, seed, how) -> None:
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_cols, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    if how == "none" or X.nnz == 0:
        validate.check_matrix(X, "adata.X")
        return
    row = int(rng.integers(1, n_rows + 1))
    if how == "past":
        X.indptr[row] = X.nnz + 1 + int(rng.integers(0, 1000))
    elif how == "decrease":
        X.indptr[0] = 1  # the first pointer above 0, or every later one below it
    elif how == "index":
        X.indices[int(rng.integers(0, X.nnz))] = n_cols + int(rng.integers(0, 2**20))
    elif how == "negative":
        X.indices[int(rng.integers(0, X.nnz))] = -1 - int(rng.integers(0, 100))
    else:
        X.data = X.data[:-1]
    with pytest.raises(InputError, match="corrupt CSR"):
        validate.check_matrix(X, "adata.X")


# -- 16: inputs that are not regular files -------------------------------------------------------
@pytest.fixture
def no_hang() -> Iterator[None]:
    # opening a named pipe blocks: fail after 20 s instead of stalling the suite
    def stop(*_):
        raise TimeoutError("blocked on opening the input")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _special(tmp_path: Path, kind: str, name: str = "in.h5ad") -> tuple[Path, socket.socket | None]:
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
        return path, None
    if kind == "device":
        path.symlink_to("/dev/zero")  # endless: reading it never ends
        return path, None
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return path, server


@pytest.mark.parametrize("kind,match", [("fifo", "named pipe"), ("device", "character device"),
                                        ("socket", "socket")])
@pytest.mark.parametrize("command", ["fit", "fit-backed", "embed", "grn", "hubs", "neighbors", "report",
                                     "attribute"])
def test_every_command_refuses_an_input_that_is_not_a_regular_file(fitted, tmp_path, capsys, no_hang,
                                                                     command, kind, match) -> None:
    path, server = _special(tmp_path, kind)
    try:
        _refused(_command(command, path, fitted, tmp_path), capsys, match)
    finally:
        if server is not None:
            server.close()


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "preprocess.json"])
def test_a_model_folder_holding_a_named_pipe_is_refused(fitted, tmp_path, capsys, no_hang, name) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for f in fitted["model"].iterdir():
        if f.name != name:
            (model / f.name).write_bytes(f.read_bytes())
    os.mkfifo(model / name)
    _refused(["embed", str(model), str(fitted["in"]), "-o", str(tmp_path / "o.h5ad"), "--device", "cpu"],
             capsys, "named pipe")


def test_a_10x_folder_is_read_and_a_pipe_inside_it_refused(tmp_path, no_hang) -> None:
    from scipy.io import mmwrite

    folder = tmp_path / "tenx"
    folder.mkdir()
    mmwrite(folder / "matrix.mtx", sp.coo_matrix(np.arange(12, dtype=np.int64).reshape(4, 3)))  # genes x cells
    (folder / "genes.tsv").write_text("".join(f"g{i}\tG{i}\n" for i in range(4)))
    (folder / "barcodes.tsv").write_text("".join(f"c{i}\n" for i in range(3)))
    assert sivae.read(folder).shape == (3, 4)
    (folder / "barcodes.tsv").unlink()
    os.mkfifo(folder / "barcodes.tsv")
    with pytest.raises(InputError, match="named pipe"):
        sivae.read(folder)


def test_read_and_read_backed_refuse_a_named_pipe(tmp_path, no_hang) -> None:
    path, _ = _special(tmp_path, "fifo")
    for reader in (sivae.read, sivae.read_backed):
        with pytest.raises(InputError, match="named pipe"):
            reader(path)


# -- 17: names holding tabs and newlines in text output ------------------------------------------
def _hostile_genes(n: int) -> list[str]:
    odd = ["tab\there", "new\nline", "cr\rreturn", "esc\x1b[31m", "back\\slash", "bell\x07ring"]
    return [odd[i // 2 % len(odd)] + str(i) if i % 2 else f"gene{i}" for i in range(n)]


@pytest.mark.parametrize("command", ["hubs", "neighbors"])
def test_hubs_and_neighbors_print_one_line_per_gene(tmp_path, capsys, command) -> None:
    n = 50
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(10, n)).astype(np.float32))
    adata.var_names = _hostile_genes(n)
    adata.var["sivae_centrality"] = rng.random(n)
    adata.varm["sivae_loadings"] = rng.normal(size=(n, 2))
    adata.write_h5ad(tmp_path / "out.h5ad")
    argv = ["hubs", str(tmp_path / "out.h5ad"), "--top", str(n)] if command == "hubs" else \
        ["neighbors", str(tmp_path / "out.h5ad"), "--gene", "gene0", "--k", str(n - 1)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == 1 + (n if command == "hubs" else n - 1)
    assert all(len(line.split("\t")) == 3 for line in lines[:-1])
    printed = {line.split("\t")[1] for line in lines[1:-1]}
    assert "tab\\there1" in printed and "new\\nline3" in printed and "back\\\\slash9" in printed


def test_neighbors_names_a_duplicated_query_gene(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(10, 6)).astype(np.float32))
    adata.var_names = ["g0", "g1", "g1", "g3", "g4", "g5"]
    adata.varm["sivae_loadings"] = rng.normal(size=(6, 2))
    adata.write_h5ad(tmp_path / "out.h5ad")
    _refused(["neighbors", str(tmp_path / "out.h5ad"), "--gene", "g1", "--k", "2"], capsys,
             "'g1' appears 2 times")
    assert main(["neighbors", str(tmp_path / "out.h5ad"), "--gene", "g0", "--k", "5"]) == 0  # others work
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_neighbors_refuses_complex_loadings_instead_of_dropping_their_imaginary_part(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(10, 6)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(6)]
    adata.varm["sivae_loadings"] = (rng.normal(size=(6, 2)) + 1j * rng.normal(size=(6, 2))).astype(np.complex64)
    adata.write_h5ad(tmp_path / "out.h5ad")
    _refused(["neighbors", str(tmp_path / "out.h5ad"), "--gene", "g0", "--k", "2"], capsys, "complex numbers")


def test_a_corrupt_sparse_varm_in_a_file_is_refused(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(10, 6)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(6)]
    adata.varm["sivae_loadings"] = sp.csr_matrix(rng.normal(size=(6, 2)))
    adata.write_h5ad(tmp_path / "out.h5ad")
    with h5py.File(tmp_path / "out.h5ad", "r+") as f:
        CORRUPTIONS["index-huge"](f["varm/sivae_loadings"])
    _refused(["neighbors", str(tmp_path / "out.h5ad"), "--gene", "g0", "--k", "2"], capsys,
             "varm/sivae_loadings")


def test_backed_input_of_text_values_is_refused(tmp_path, capsys) -> None:
    adata = _counts()
    adata.write_h5ad(tmp_path / "in.h5ad")
    with h5py.File(tmp_path / "in.h5ad", "r+") as f:
        values = f["X/data"][:]
        del f["X/data"]
        f.create_dataset("X/data", data=values.astype(str).astype(object), dtype=h5py.string_dtype())
    _refused(["fit", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "o.h5ad"), "--backed", *TINY], capsys, "text")


def test_a_file_with_narrow_or_unsigned_index_dtypes_is_read_and_trained_on(tmp_path, capsys) -> None:
    # anndata keeps int16 indices and uint64 pointers as stored, and every scipy routine refused them
    _counts().write_h5ad(tmp_path / "in.h5ad")
    with h5py.File(tmp_path / "in.h5ad", "r+") as f:
        for name, dtype in (("indices", np.int16), ("indptr", np.uint64)):
            _replace(name, lambda v, dtype=dtype: v.astype(dtype))(f["X"])
    assert main(["fit", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "o.h5ad"), *TINY]) == 0, \
        capsys.readouterr().err


def test_an_in_memory_matrix_with_int16_indices_is_refused_in_one_sentence() -> None:
    adata = _counts()
    adata.X.indices = adata.X.indices.astype(np.int16)
    with pytest.raises(InputError, match="int16, where scipy takes int32 or int64"):
        sivae.pp.preprocess(adata)
