"""Multi-process training under torchrun (sivae.train.trainer with DistributedDataParallel, `sivae fit`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sivae.cli import main
from sivae.nn.module import Batch, CellVAE, ModuleConfig, SIVAEModule

N_PROCESSES = 2
pytestmark = pytest.mark.usefixtures("one_thread")  # for the single-process runs in this process
needs_distributed = pytest.mark.skipif(not torch.distributed.is_available(),
                                       reason="this torch build has no torch.distributed")


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on small networks
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={N_PROCESSES}", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _two_groups(path: Path, n_cells: int = 600, n_features: int = 40, noise: float = 0.4) -> Path:
    # two well-separated groups in a 2-D latent space, z-scored: valid for --no-preprocess
    rng = np.random.default_rng(0)
    group = np.arange(n_cells) % 2
    z = 0.7 * rng.normal(size=(n_cells, 2)) + np.where(group[:, None] == 1, 1.5, -1.5)
    X = z @ rng.normal(size=(2, n_features)) + noise * rng.normal(size=(n_cells, n_features))
    adata = ad.AnnData(((X - X.mean(0)) / X.std(0)).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(n_features)]
    adata.write_h5ad(path)
    return path


FIT = ["--no-preprocess", "--no-progress", "--hidden", "32,16", "--c-red", "10", "--n-latent", "2"]


# -- sivae fit under torchrun ---------------------------------------------------------------------
@needs_distributed
def test_two_processes_train_as_well_as_one(tmp_path: Path) -> None:
    data = _two_groups(tmp_path / "in.h5ad")
    # Each rank takes batches of 32, so one step averages 64 cells' gradients: the same steps
    # per epoch and cells per step as one process with batches of 64. At equal batches the two
    # processes would take half the steps: 4% worse after 15 epochs here, not yet converged.
    result = _torchrun("-m", "sivae", "fit", str(data), "-o", str(tmp_path / "two.h5ad"), *FIT,
                       "--epochs", "15", "--batch-size", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["fit", str(data), "-o", str(tmp_path / "one.h5ad"), *FIT,
                 "--epochs", "15", "--batch-size", "64"]) == 0
    assert len([line for line in result.stdout.splitlines() if line.startswith("wrote ")]) == 1
    one, two = ad.read_h5ad(tmp_path / "one.h5ad"), ad.read_h5ad(tmp_path / "two.h5ad")
    for name in ("obsm", "varm"):
        shapes = [{key: value.shape for key, value in getattr(a, name).items()} for a in (one, two)]
        assert shapes[0] == shapes[1]
    assert list(one.var.columns) == list(two.var.columns)
    assert one.uns.keys() == two.uns.keys()
    losses = [a.uns["sivae"]["losses"] for a in (one, two)]
    assert list(losses[0]["phase"]) == list(losses[1]["phase"])  # the same epochs, none stopped early
    val_one, val_two = losses[0]["val"][-1], losses[1]["val"][-1]
    print(f"\nfinal held-out loss: one process {val_one:.3f}, two processes {val_two:.3f}")
    assert val_two == pytest.approx(val_one, rel=0.05)


@needs_distributed
def test_checkpoint_of_two_processes_refuses_to_resume_in_one(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    data = _two_groups(tmp_path / "in.h5ad", n_cells=200)
    checkpoints = tmp_path / "ckpt"
    result = _torchrun("-m", "sivae", "fit", str(data), "-o", str(tmp_path / "two.h5ad"), *FIT,
                       "--epochs", "1", "--checkpoint-dir", str(checkpoints))
    assert result.returncode == 0, result.stderr[-3000:]
    code = main(["fit", str(data), "-o", str(tmp_path / "one.h5ad"), *FIT, "--epochs", "2",
                 "--checkpoint-dir", str(checkpoints), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("sivae: error:") and len(err.splitlines()) == 1
    assert "written by 2 processes" in err and "this run has 1" in err
    assert not (tmp_path / "one.h5ad").exists()


@needs_distributed
def test_world_size_without_torchrun_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = _two_groups(tmp_path / "in.h5ad", n_cells=200)
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["fit", str(data), "-o", str(tmp_path / "out.h5ad"), *FIT, "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "WORLD_SIZE is 2" in err and "torchrun" in err


@needs_distributed
def test_an_input_error_on_rank_zero_stops_every_rank(tmp_path: Path) -> None:
    # rank 0 alone reads and preprocesses in memory; values that are not counts must end both
    # processes with the sentence, not leave rank 1 waiting for the broadcast until a timeout
    data = _two_groups(tmp_path / "scaled.h5ad", n_cells=200)
    result = _torchrun("-m", "sivae", "fit", str(data), "-o", str(tmp_path / "out.h5ad"), "--no-progress",
                       timeout=120)
    assert result.returncode != 0
    sentences = [line for line in result.stderr.splitlines() if line.startswith("sivae: error:")]
    assert len(sentences) == N_PROCESSES, result.stderr[-3000:]  # each rank says it, rank 1 too
    assert all("must hold counts" in line for line in sentences)
    assert not (tmp_path / "out.h5ad").exists()


# -- sivae.distributed from Python ---------------------------------------------------------------
@needs_distributed
def test_a_python_script_under_torchrun_joins_the_group_and_reads_once(tmp_path: Path) -> None:
    worker = Path(__file__).parent / "ddp_entry_worker.py"
    result = _torchrun(str(worker), str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(N_PROCESSES)]
    assert [r["rank"] for r in ranks] == list(range(N_PROCESSES))
    assert all(r["world"] == N_PROCESSES and r["group_ended"] for r in ranks)
    assert [r["loads"] for r in ranks] == [1] + [0] * (N_PROCESSES - 1)  # rank 0 alone read
    assert all(r["X"] == ranks[0]["X"] for r in ranks) and ranks[0]["X"][3] == [9.0, 10.0, 11.0]


def test_in_one_process_the_entry_points_do_nothing_but_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from sivae.distributed import load_on_rank_zero, process_group

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as rank:
        assert rank == 0 and not torch.distributed.is_initialized()
        assert load_on_rank_zero(lambda: "loaded") == "loaded"


# -- the trainer on two ranks ---------------------------------------------------------------------
@needs_distributed
def test_ranks_hold_one_model_and_resume_exactly(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    result = _torchrun(str(worker), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    def load(run: str, rank: int) -> tuple[np.ndarray, dict]:
        name = f"{run}-rank{rank}"
        return np.load(tmp_path / f"{name}.npy"), json.loads((tmp_path / f"{name}.json").read_text())

    (params0, info0), (params1, info1) = load("uninterrupted", 0), load("uninterrupted", 1)
    # the ranks trained on different batches: only averaged gradients keep them equal
    assert np.array_equal(params0, params1)
    assert info0["history"] == info1["history"]
    assert info0["requires_grad"] and info1["requires_grad"]  # restored after the phases
    for rank in range(N_PROCESSES):
        params, info = load("resumed", rank)
        expected_params, expected = load("uninterrupted", rank)
        assert np.array_equal(params, expected_params), f"rank {rank} resumed to other parameters"
        assert info["history"] == expected["history"]
    meta = json.loads((tmp_path / "uninterrupted" / "checkpoint.json").read_text())
    assert meta["world_size"] == N_PROCESSES


# -- the passes around training, shared out ------------------------------------------------------
def _raw_counts(path: Path, n_cells: int = 480, n_features: int = 60) -> Path:
    # two groups of cells with their own gene programmes, as CSR counts: a file for --backed
    rng = np.random.default_rng(0)
    group = np.arange(n_cells) % 2
    rate = rng.gamma(2.0, 1.0, size=(2, n_features))
    counts = rng.poisson(rate[group] * rng.uniform(0.5, 2.0, size=(n_cells, 1))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{i}" for i in range(n_features)]
    adata.obs["sample"] = np.array(["s0", "s1", "s2"])[rng.integers(0, 3, n_cells)]  # for batch_key
    adata.write_h5ad(path)
    return path


@needs_distributed
@pytest.mark.parametrize("batch_key", [
    pytest.param(None, id="no-batch"), pytest.param("sample", id="batch-key", marks=pytest.mark.slow)])
def test_ranks_share_the_passes_around_training(tmp_path: Path, batch_key: str | None) -> None:
    # with a batch_key: genes chosen from each batch's moments, the batch a covariate of training
    data = _raw_counts(tmp_path / "counts.h5ad")
    worker = Path(__file__).with_name("ddp_pipeline_worker.py")
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    extra = [] if batch_key is None else [batch_key]
    result = _torchrun(str(worker), str(data), str(tmp_path / "two"), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    alone = subprocess.run([sys.executable, str(worker), str(data), str(tmp_path / "one"), *extra],
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    one = np.load(tmp_path / "one" / "rank0.npz")
    ranks = [np.load(tmp_path / "two" / f"rank{r}.npz") for r in range(N_PROCESSES)]
    for run in ranks:
        # preprocessing statistics and the feature-wise input are those of one process
        assert np.array_equal(run["features"], one["features"])
        for key in ("var_mean", "var_std", "library"):
            np.testing.assert_allclose(run[key], one[key], rtol=1e-9, err_msg=key)
        np.testing.assert_allclose(run["feature_x"], one["feature_x"], atol=1e-4)
        # the outputs gathered from both ranks are the model's outputs over all cells
        np.testing.assert_allclose(run["embedding"], run["embedding_alone"], atol=1e-6)
        np.testing.assert_allclose(run["centrality"], run["centrality_alone"], atol=1e-9)
    np.testing.assert_array_equal(ranks[0]["embedding"], ranks[1]["embedding"])
    reads_one = json.loads((tmp_path / "one" / "rows0.json").read_text())
    reads = [json.loads((tmp_path / "two" / f"rows{r}.json").read_text()) for r in range(N_PROCESSES)]
    print(f"\nrows read: one process {reads_one}; two processes {reads}")
    for stage, alone_rows in reads_one.items():
        shares = [r[stage] for r in reads]
        assert sum(shares) == pytest.approx(alone_rows, rel=0.02), stage  # nothing read twice
        assert max(shares) <= 0.6 * alone_rows, f"{stage}: a rank read {max(shares)} of {alone_rows} rows"


# -- what DDP relies on, checked without it -------------------------------------------------------
def _batch(config: ModuleConfig, n_cells: int = 8, n_scored: int = 5) -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_cells, config.n_features, generator=g)
    idx = torch.arange(n_scored)  # fewer features than the data has, as a feature minibatch
    nb = config.likelihood == "nb"
    counts = torch.poisson(torch.full((n_cells, config.n_features), 3.0), generator=g)
    return Batch(
        x=x, target=counts[:, idx] if nb else x[:, idx], feature_idx=idx,
        feature_x=torch.randn(config.n_features, config.n_feature_input or 1, generator=g)[idx],
        n_cells=100, n_features=config.n_features, library=counts.sum(1) if nb else None,
    )


@pytest.mark.parametrize("module_class", [SIVAEModule, CellVAE])
@pytest.mark.parametrize("options", [
    {}, {"variance": "feature"}, {"likelihood": "nb"}, {"linear": True}, {"gamma": 0.0},
    {"likelihood": "nb", "linear": True, "gamma": 0.0},
], ids=["default", "feature-variance", "nb", "linear", "gamma-0", "ldvae"])
def test_every_phase_parameter_gets_a_gradient(module_class: type, options: dict) -> None:
    # DDP runs with find_unused_parameters=False: a parameter a phase trains but its loss does not
    # reach would leave DDP waiting for its gradient at the next step
    config = ModuleConfig(n_features=12, n_latent=2, encoder_hidden=(8,), decoder_hidden=(8,),
                          n_feature_input=4, **options)
    torch.manual_seed(0)
    module = module_class(config)
    for phase in module.phases:
        trained = module.phase_parameters(phase)
        module.zero_grad(set_to_none=True)
        module.loss(_batch(config), phase).total.backward()
        names = {id(p): name for name, p in module.named_parameters()}
        missing = [names[id(p)] for p in trained if p.grad is None]
        assert not missing, f"phase {phase!r} trains {missing} but its loss does not reach them"
