"""sivae._files and sivae._commit: kills, full disks, concurrent saves and tampered folders (issue 25).

The kill tests run sivae in a child process (tests/kill_worker.py) and SIGKILL it at the named
step; what it leaves on disk is then handed to the next run, as a user would."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sivae
import sivae._commit
from sivae._constants import FILES
from sivae._errors import InputError
from sivae.train.checkpoint import load_checkpoint, save_checkpoint
from sivae.cli import main
from test_safety import RELEASE_0_1_0, TINY, _counts  # the same tiny runs as the first audit's
WORKER = Path(__file__).parent / "kill_worker.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """in.h5ad, and the pair out.h5ad + model of a seed-0 `sivae fit` with a checkpoint folder."""
    folder = tmp_path_factory.mktemp("fitted")
    _counts().write_h5ad(folder / "in.h5ad")
    assert main(["fit", str(folder / "in.h5ad"), "-o", str(folder / "out.h5ad"), "--model-dir",
                 str(folder / "model"), "--checkpoint-dir", str(folder / "ckpt"), *TINY]) == 0
    return folder


@pytest.fixture
def project(fitted, tmp_path) -> Path:
    """A copy of ``fitted`` to spoil."""
    shutil.copytree(fitted, tmp_path / "p")
    return tmp_path / "p"


def _refused(argv: list[str], capsys, match: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err
    return err


def _killed(target: str, n: int, kind: str, *args: str) -> None:
    """Run tests/kill_worker.py and check that it was killed at call ``n`` of ``target``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(sivae.__file__).parents[1])}
    run = subprocess.run([sys.executable, str(WORKER), target, str(n), kind, *args], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == -9, run.stderr[-2000:]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _run_ids(out: Path, model_dir: Path) -> tuple[str, str]:
    uns = ad.read_h5ad(out).uns["sivae"]
    return uns["run_id"], json.loads((model_dir / FILES.CONFIG).read_text())["run_id"]


# -- 2, 3: `fit --force` killed while renaming its outputs in ---------------------------------------
# os.replace calls of the commit: 1-2 the journals (the decision), 3 the h5ad, 4 the old model
# folder aside, 5 the new one in, 6 the old one to its deletion
@pytest.mark.parametrize("call,decided", [(2, False), (4, True), (5, True)],
                         ids=["before-the-decision", "between-the-renames", "model-moved-aside"])
def test_a_fit_killed_while_renaming_leaves_a_pair_of_one_run_and_no_model_lost(project, capsys, call, decided) -> None:
    out, model_dir = project / "out.h5ad", project / "model"
    old = _run_ids(out, model_dir)
    _killed("os.replace", call, "cli", "fit", str(project / "in.h5ad"), "-o", str(out), "--model-dir",
            str(model_dir), "--force", "--seed", "5", *TINY)
    if call == 5:
        assert not model_dir.exists()  # the moment of the audit: the folder is gone from its place
    # the next run, without --force, must not delete anything: it restores, then refuses
    _refused(["fit", str(project / "in.h5ad"), "-o", str(out), "--model-dir", str(model_dir), *TINY],
             capsys, "exists")
    new = _run_ids(out, model_dir)
    assert new[0] == new[1] and (new != old) == decided
    sivae.load_model(model_dir, ad.read_h5ad(out), device="cpu")  # loads, with its own data
    assert _hidden(project) == []


def test_a_model_moved_aside_by_an_older_sivae_is_restored_not_deleted(project, capsys) -> None:
    # what sivae 0.1 left after the audit's kill: the model inside a temporary of a dead process
    model_dir = project / "model"
    aside = project / f".model.sivae-{2**22 + 4321}-abcd"
    aside.mkdir()
    model_dir.rename(aside / "old")
    _refused(["fit", str(project / "in.h5ad"), "-o", str(project / "new.h5ad"), "--model-dir",
              str(model_dir), *TINY], capsys, "exists")
    assert (model_dir / FILES.WEIGHTS).is_file() and _hidden(project) == []


def test_a_model_and_an_anndata_of_two_runs_are_refused_together(project, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    assert main(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "other.h5ad"), "--model-dir",
                 str(other), "--seed", "3", *TINY]) == 0
    with pytest.raises(InputError, match="two different `sivae fit` runs"):
        sivae.load_model(other, ad.read_h5ad(project / "out.h5ad"), device="cpu")
    _refused(["report", str(project / "out.h5ad"), "--model-dir", str(other), "-o", str(tmp_path / "r.html")],
             capsys, "two different `sivae fit` runs")


# -- 4: loads while another process keeps replacing the folder --------------------------------------
def test_a_load_sees_one_whole_save_while_another_process_replaces_the_folder(project, tmp_path) -> None:
    adata = ad.read_h5ad(project / "out.h5ad")
    models = {}
    for seed in (0, 1):  # two saves of the same shapes, told apart by their config and weights
        model = sivae.load_model(project / "model", adata, device="cpu")
        model.config = type(model.config)(**{**model.config.__dict__, "seed": seed})
        with torch.no_grad():
            for p in model.module.parameters():
                p.add_(seed)
        model.save(tmp_path / f"m{seed}")
        models[seed] = model.get_loadings()
    target = tmp_path / "live"
    shutil.copytree(tmp_path / "m0", target)
    code = ("import shutil, sivae\n"
            f"ms = [sivae.load_model({str(tmp_path / 'm0')!r}, device='cpu'), "
            f"sivae.load_model({str(tmp_path / 'm1')!r}, device='cpu')]\n"
            "i = 0\n"
            f"while True:\n    ms[i % 2].save({str(target)!r}, overwrite=True); i += 1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(sivae.__file__).parents[1])}
    saver = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    loads = refusals = 0
    try:
        first = target.stat().st_ino
        started = time.monotonic()
        while target.exists() and target.stat().st_ino == first and time.monotonic() < started + 120:
            time.sleep(0.05)  # until the other process has replaced the folder once
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                model = sivae.load_model(target, device="cpu")
            except InputError:
                refusals += 1
                continue
            loads += 1
            np.testing.assert_allclose(model.get_loadings(), models[model.config.seed], atol=1e-5)
    finally:
        saver.kill()
        saver.wait()
    assert loads > 0 and refusals <= loads, (loads, refusals)


# -- 5: a full disk -------------------------------------------------------------------------------
class _FullDisk:
    """Stands for a file on a full filesystem: the first write fails with ENOSPC."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_checkpoint_write_on_a_full_disk_keeps_the_last_complete_one(fitted, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(fitted / "ckpt", folder)
    state = load_checkpoint(folder)
    monkeypatch.setattr(sivae._commit, "open", _FullDisk, raising=False)
    with pytest.raises(InputError, match="no space left on .* writing"):
        save_checkpoint(folder, state)
    monkeypatch.undo()
    assert load_checkpoint(folder).position == state.position
    assert _hidden(folder) == []


@pytest.mark.parametrize("command", ["fit", "fit-force", "embed", "grn", "report", "simulate-large"])
def test_every_write_on_a_full_disk_is_one_sentence_and_leaves_nothing(project, capsys, monkeypatch, command) -> None:
    monkeypatch.setattr(sivae._commit, "open", _FullDisk, raising=False)
    monkeypatch.setattr("pathlib.Path.write_text", lambda *a, **k: _FullDisk().write(""))
    monkeypatch.setattr("pandas.DataFrame.to_csv", lambda *a, **k: _FullDisk().write(""))
    before = _files(project)
    inp, out = str(project / "in.h5ad"), str(project / "out.h5ad")
    argv = {"fit": ["fit", inp, "-o", str(project / "new.h5ad"), *TINY],
            "fit-force": ["fit", inp, "-o", out, "--model-dir", str(project / "model"), "--force", *TINY],
            "embed": ["embed", str(project / "model"), inp, "-o", str(project / "e.h5ad"), "--device", "cpu"],
            "grn": ["grn", out, "-o", str(project / "g.csv"), "--method", "clr"],
            "report": ["report", out, "-o", str(project / "r.html")],
            "simulate-large": ["simulate-large", "-o", str(project / "s.h5ad"), "--cells", "50", "--features", "20", "--no-progress"]}
    _refused(argv[command], capsys, "no space left on")
    assert _files(project) == before
    assert _hidden(project) == []


@pytest.fixture
def tiny_filesystem(tmp_path) -> Path:
    """A 2 MiB tmpfs, almost full (needs root; skipped where mounting is not permitted)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        free = shutil.disk_usage(mount).free
        (mount / "filler").write_bytes(b"\0" * (free - 16 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_is_one_sentence_not_a_crash(project, tiny_filesystem, capsys) -> None:
    # HDF5 itself crashed (SIGSEGV) here before: h5py issues #914, #2160
    out = tiny_filesystem / "out.h5ad"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(sivae.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-m", "sivae", "fit", str(project / "in.h5ad"), "-o", str(out),
                          "--model-dir", str(tiny_filesystem / "model"), *TINY], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "no space left on" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert sorted(p.name for p in tiny_filesystem.iterdir()) == ["filler"]
    _refused(["simulate-large", "-o", str(tiny_filesystem / "s.h5ad"), "--cells", "2000", "--features", "200", "--no-progress"],
             capsys, "no space left on")
    assert sorted(p.name for p in tiny_filesystem.iterdir()) == ["filler"]


# -- 6, 7: checkpoints ------------------------------------------------------------------------------
def test_a_fit_killed_before_replacing_checkpoint_json_resumes_from_the_last_complete_one(project, capsys) -> None:
    ckpt = project / "ck"
    # os.replace 3: the second checkpoint's tensors are in, 4: its checkpoint.json would replace the first's
    _killed("os.replace", 4, "cli", "fit", str(project / "in.h5ad"), "-o", str(project / "a.h5ad"),
            "--checkpoint-dir", str(ckpt), *TINY)
    assert any(name.startswith(".checkpoint.json.sivae-") for name in _hidden(ckpt))
    assert json.loads((ckpt / FILES.CHECKPOINT_META).read_text())["tensors"] == "checkpoint-1.safetensors"
    assert main(["fit", str(project / "in.h5ad"), "-o", str(project / "a.h5ad"), "--checkpoint-dir",
                 str(ckpt), "--resume", *TINY]) == 0, capsys.readouterr().err
    assert _hidden(ckpt) == []


@pytest.mark.parametrize("change,match", [("reversed", "feature 1 is"), ("fewer-cells", "cells x"),
                                          ("other-genes", "feature")])
def test_resume_on_other_data_is_refused(project, capsys, change, match) -> None:
    counts = ad.read_h5ad(project / "in.h5ad")
    changed = {"reversed": lambda a: a[:, ::-1].copy(), "fewer-cells": lambda a: a[:100].copy(),
               "other-genes": lambda a: ad.AnnData(a.X, obs=a.obs, var=a.var.set_axis([f"x{i}" for i in range(a.n_vars)]))}
    changed[change](counts).write_h5ad(project / "changed.h5ad")
    _refused(["fit", str(project / "changed.h5ad"), "-o", str(project / "a.h5ad"), "--checkpoint-dir",
              str(project / "ckpt"), "--resume", *TINY], capsys, match)


# -- 8: tampered model folders ---------------------------------------------------------------------
def _legacy(tmp_path: Path) -> Path:
    folder = tmp_path / "legacy"
    shutil.copytree(RELEASE_0_1_0 / "model", folder)
    return folder


@pytest.mark.parametrize("legacy", [False, True], ids=["hashed", "release-0.1.0"])
def test_non_finite_weights_are_refused(project, tmp_path, legacy) -> None:
    folder = _legacy(tmp_path) if legacy else project / "model"
    tensors = load_file(folder / FILES.WEIGHTS)
    save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, folder / FILES.WEIGHTS)
    with pytest.raises(InputError, match="non-finite weights"):
        sivae.load_model(folder, device="cpu")


def test_weights_of_another_run_are_refused(project, tmp_path) -> None:
    assert main(["fit", str(project / "in.h5ad"), "-o", str(tmp_path / "o.h5ad"), "--model-dir",
                 str(tmp_path / "other"), "--seed", "7", *TINY]) == 0
    shutil.copy(tmp_path / "other" / FILES.WEIGHTS, project / "model" / FILES.WEIGHTS)
    with pytest.raises(InputError, match="SHA-256 differs"):
        sivae.load_model(project / "model", device="cpu")


@pytest.mark.parametrize("field,value", [("target_sum", float("inf")), ("library_features", []),
                                         ("max_value", -1), ("raw_counts", "yes"), ("target_sum", 10**400),
                                         ("features", ["g0"] * 31), ("library_features", ["g0"])])
def test_out_of_range_preprocessing_records_are_refused(tmp_path, field, value) -> None:
    folder = _legacy(tmp_path)
    record = json.loads((folder / FILES.PREPROCESS).read_text())
    record[field] = value
    (folder / FILES.PREPROCESS).write_text(json.dumps(record))
    with pytest.raises(InputError, match="preprocess.json is corrupt"):
        sivae.load_model(folder, device="cpu")


@pytest.mark.parametrize("name,text,match", [
    (FILES.CONFIG, "[" * 200_000 + "]" * 200_000, "nested too deeply"), (FILES.CONFIG, "[1, 2]", "lacks the keys"),
    (FILES.PREPROCESS, "{not json", "preprocess.json is corrupt"),
    (FILES.PREPROCESS, "[1, 2]", "preprocess.json is corrupt")], ids=["deep", "config-list", "not-json", "list"])
def test_malformed_model_files_are_one_sentence(tmp_path, capsys, name, text, match) -> None:
    folder = _legacy(tmp_path)
    (folder / name).write_text(text)
    _refused(["embed", str(folder), str(RELEASE_0_1_0 / "counts.h5ad"), "-o", str(tmp_path / "e.h5ad")],
             capsys, match)


@pytest.mark.parametrize("name,text,match", [(FILES.CONFIG, "[1, 2]", "lacks the keys"),
                                             (FILES.PREPROCESS, "[1, 2]", "preprocess.json"),
                                             (FILES.PREPROCESS, "{not json", "preprocess.json")])
def test_report_on_a_malformed_model_folder_is_one_sentence(project, tmp_path, capsys, name, text, match) -> None:
    folder = _legacy(tmp_path)
    (folder / name).write_text(text)
    _refused(["report", str(project / "out.h5ad"), "--model-dir", str(folder), "-o", str(tmp_path / "r.html")],
             capsys, match)


# -- 19, 20 and paths nobody tried -----------------------------------------------------------------
def test_model_dir_root_names_the_real_reason(project, capsys) -> None:
    _refused(["fit", str(project / "in.h5ad"), "-o", str(project / "o2.h5ad"), "--model-dir", "/", "--force",
              *TINY], capsys, "did not write")


def test_a_symlink_loop_in_the_output_path_is_one_sentence(project, capsys) -> None:
    loop = project / "loopdir"
    loop.symlink_to(loop)
    _refused(["report", str(project / "out.h5ad"), "-o", str(loop / "r.html")], capsys, "loops")
    _refused(["fit", str(project / "in.h5ad"), "-o", str(loop / "o.h5ad"), *TINY], capsys, "loops")


def test_an_embed_killed_before_its_rename_leaves_no_output_and_the_next_cleans_up(project, capsys) -> None:
    out = project / "e.h5ad"
    _killed("os.replace", 1, "cli", "embed", str(project / "model"), str(project / "in.h5ad"), "-o", str(out),
            "--device", "cpu")
    assert not out.exists() and _hidden(project)  # the temporary of the dead run
    assert main(["embed", str(project / "model"), str(project / "in.h5ad"), "-o", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and _hidden(project) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_destination_folder_is_one_sentence(project, capsys) -> None:
    folder = project / "ro"
    folder.mkdir(mode=0o555)
    _refused(["embed", str(project / "model"), str(project / "in.h5ad"), "-o", str(folder / "e.h5ad")],
             capsys, "not writable")
