"""sivae.train.Trainer and sivae.data.loaders.BlockSampler: seeds, resume, early stopping."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch

import sivae.module
import sivae.train
from sivae.data.loaders import BlockSampler, CellMatrix
from sivae.module import ModuleConfig, SIVAEModule
from sivae.train import TrainConfig, Trainer, TrainingData

N_CELLS, N_FEATURES, C_RED = 150, 20, 6
CONFIG = ModuleConfig(n_features=N_FEATURES, n_latent=2, encoder_hidden=(16, 8), decoder_hidden=(8, 16),
                      n_feature_input=C_RED)
TRAIN = TrainConfig(max_epochs=4, pretrain_epochs=2, batch_size=32, seed=0, patience=100)
# _train_epoch calls of one uninterrupted fit: cell 0-1, feature 0-1, joint 0-3
EPOCHS = [("cell", 0), ("cell", 1), ("feature", 0), ("feature", 1),
          ("joint", 0), ("joint", 1), ("joint", 2), ("joint", 3)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    # two latent factors drive the 20 features; 120 training and 30 held-out cells
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N_CELLS, 2))
    loadings = rng.normal(size=(2, N_FEATURES))
    X = z @ loadings + 0.3 * rng.normal(size=(N_CELLS, N_FEATURES))
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    order = rng.permutation(N_CELLS)
    return TrainingData(cells=CellMatrix(X), train_idx=np.sort(order[:120]), val_idx=np.sort(order[120:]),
                        feature_x=torch.from_numpy(rng.normal(size=(N_FEATURES, C_RED)).astype(np.float32)))


def _module(seed: int = 0) -> SIVAEModule:
    torch.manual_seed(seed)
    return SIVAEModule(CONFIG)


def _trainer(data: TrainingData, config: TrainConfig = TRAIN, seed: int = 0) -> Trainer:
    return Trainer(_module(seed), data, config, progress=False)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ: {different}"


def _without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _interrupt_on_call(trainer: Trainer, n: int) -> None:
    # the n-th epoch raises before it trains, as a Ctrl-C between two epochs would
    original, calls = trainer._train_epoch, [0]

    def train_epoch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    trainer._train_epoch = train_epoch


# -- reproducibility ------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_parameters(data: TrainingData) -> None:
    first, second = _trainer(data), _trainer(data)
    history = first.fit()
    second.fit()
    _assert_same_state(first.module.state_dict(), second.module.state_dict())
    assert [(h["phase"], h["epoch"]) for h in history] == EPOCHS
    assert all(math.isfinite(h["total"]) and math.isfinite(h["val"]) for h in history)


@pytest.fixture(scope="module")
def uninterrupted(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    trainer = _trainer(data, TrainConfig(**{**TRAIN.__dict__, "checkpoint_every": 1}))
    trainer.fit(checkpoint_dir=tmp_path_factory.mktemp("a") / "ckpt")
    return trainer


@pytest.mark.parametrize("n", [2, 3, 5, 6], ids=[
    "in-cell-pretraining", "first-feature-epoch", "first-joint-epoch", "in-joint-training"])
def test_resumed_run_matches_uninterrupted_run(data: TrainingData, uninterrupted: Trainer,
                                               tmp_path: pathlib.Path, n: int) -> None:
    config = TrainConfig(**{**TRAIN.__dict__, "checkpoint_every": 1})
    interrupted = _trainer(data, config)
    _interrupt_on_call(interrupted, n)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(checkpoint_dir=tmp_path / "ckpt")
    resumed = Trainer(_module(seed=1), data, config, progress=False)  # weights come from the checkpoint
    resumed.fit(checkpoint_dir=tmp_path / "ckpt", resume=True)
    expected, got = uninterrupted.evaluate("joint"), resumed.evaluate("joint")
    assert got == pytest.approx(expected, rel=0.01)
    assert got == expected  # in fact bit-identical: module, optimiser, RNGs and sampler are restored
    _assert_same_state(uninterrupted.module.state_dict(), resumed.module.state_dict())
    assert _without_timings(resumed.history) == _without_timings(uninterrupted.history)


# -- early stopping -------------------------------------------------------------------------------
def test_early_stopping_restores_the_best_epoch(data: TrainingData, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(data, TrainConfig(**{**TRAIN.__dict__, "patience": 1}))
    joint_losses = iter([2.0, 1.0, 1.5, 0.5])  # best at joint epoch 1, worse at 2: stop there
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(phase: str) -> float:
        if phase != "joint":
            return 1.0 / (len(trainer.history) + 1)  # pre-training keeps improving
        snapshots.append(_state(trainer.module))
        return next(joint_losses)

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    history = trainer.fit()
    assert [(h["phase"], h["epoch"]) for h in history] == EPOCHS[:4] + [("joint", 0), ("joint", 1), ("joint", 2)]
    assert len(snapshots) == 3
    _assert_same_state(snapshots[1], trainer.module.state_dict())
    assert not torch.equal(snapshots[2]["cell.bias"], trainer.module.state_dict()["cell.bias"])


# -- held-out loss and feature minibatches --------------------------------------------------------
@pytest.mark.parametrize("feature_batch_size", [5, 6], ids=["blocks-divide-F", "uneven-last-block"])
@pytest.mark.parametrize("phase", ["cell", "joint"])
def test_evaluate_does_not_depend_on_feature_batch_size(data: TrainingData, monkeypatch: pytest.MonkeyPatch,
                                                        phase: str, feature_batch_size: int) -> None:
    monkeypatch.setattr(sivae.module, "reparameterize", lambda mean, log_var: mean)  # no sampling noise
    module = _module()
    full = Trainer(module, data, TRAIN, progress=False).evaluate(phase)
    # evaluation takes blocks of at least _EVAL_FEATURE_BLOCK; lower it so these blocks are used
    monkeypatch.setattr(sivae.train, "_EVAL_FEATURE_BLOCK", 1)
    config = TrainConfig(**{**TRAIN.__dict__, "feature_batch_size": feature_batch_size})
    blocked = Trainer(module, data, config, progress=False).evaluate(phase)
    assert blocked == pytest.approx(full, rel=1e-5)


def test_training_on_feature_minibatches(data: TrainingData) -> None:
    trainer = _trainer(data, TrainConfig(**{**TRAIN.__dict__, "feature_batch_size": 5}))
    widths: set[tuple[str, int]] = set()
    loss = trainer.module.loss

    def recording_loss(batch, phase):
        if phase != "feature":
            widths.add((phase, batch.target.shape[1]))
        return loss(batch, phase)

    trainer.module.loss = recording_loss
    history = trainer.fit()
    assert ("cell", 5) in widths and ("joint", 5) in widths
    assert all(math.isfinite(h["total"]) and math.isfinite(h["val"]) for h in history)
    assert math.isfinite(trainer.evaluate("joint"))


# -- BlockSampler ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n_cells", [120, 150])
def test_sampler_visits_every_training_cell_once_per_epoch(n_cells: int) -> None:
    cells = np.random.default_rng(0).choice(1000, n_cells, replace=False)
    sampler = BlockSampler(cells, N_FEATURES, batch_size=32, feature_batch_size=N_FEATURES, seed=0)
    for _ in range(3):
        steps = list(sampler.epoch())
        seen = np.concatenate([c for c, _ in steps])
        assert len(steps) == sampler.steps_per_epoch()
        assert np.array_equal(np.sort(seen), np.sort(cells))
        assert all(np.array_equal(f, np.arange(N_FEATURES)) for _, f in steps)


@pytest.mark.parametrize("feature_batch_size", [5, 6])
def test_sampler_scores_features_evenly(feature_batch_size: int) -> None:
    per_pass = N_FEATURES // feature_batch_size  # blocks cut from one shuffled feature order
    sampler = BlockSampler(np.arange(10 * per_pass * 4), N_FEATURES, batch_size=10,
                           feature_batch_size=feature_batch_size, seed=0)
    blocks = [f for _, f in sampler.epoch()]  # four passes over the features
    assert len(blocks) == 4 * per_pass and all(len(b) == feature_batch_size for b in blocks)
    for start in range(0, len(blocks), per_pass):
        one_pass = np.concatenate(blocks[start : start + per_pass])
        assert len(np.unique(one_pass)) == len(one_pass)  # no feature twice within a pass
    counts = np.bincount(np.concatenate(blocks), minlength=N_FEATURES)
    if N_FEATURES % feature_batch_size == 0:
        assert (counts == 4).all()
    else:
        assert counts.max() <= 4


@pytest.mark.parametrize("feature_batch_size", [N_FEATURES, 10], ids=["all-features", "feature-blocks"])
def test_two_ranks_split_the_cells_between_them(feature_batch_size: int) -> None:
    cells = np.arange(150)  # five batches of 32: rank 1 gets the first batch again as padding
    ranks = [BlockSampler(cells, N_FEATURES, batch_size=32, feature_batch_size=feature_batch_size, seed=0,
                          rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        steps = [list(sampler.epoch()) for sampler in ranks]
        # equal step counts, or DDP's collectives would wait forever on the shorter rank
        assert len(steps[0]) == len(steps[1]) == ranks[0].steps_per_epoch() == 3
        seen = [np.concatenate([c for c, _ in pairs]) for pairs in steps]
        assert np.array_equal(np.unique(np.concatenate(seen)), cells), f"cells missed in epoch {epoch}"
        assert np.array_equal(steps[1][-1][0], steps[0][0][0])  # the padding wraps around
        assert len(np.unique(seen[0])) == len(seen[0])
        # the ranks drew the same global sequence: their generators are still in step
        assert ranks[0].rng.bit_generator.state == ranks[1].rng.bit_generator.state


def test_sampler_state_reproduces_the_next_epoch() -> None:
    sampler = BlockSampler(np.arange(100), N_FEATURES, batch_size=16, feature_batch_size=6, seed=0)
    list(sampler.epoch())
    state = json.loads(json.dumps(sampler.state_dict()))  # as a checkpoint stores it
    expected = list(sampler.epoch())
    other = BlockSampler(np.arange(100), N_FEATURES, batch_size=16, feature_batch_size=6, seed=123)
    other.load_state_dict(state)
    got = list(other.epoch())
    assert len(got) == len(expected)
    for (c1, f1), (c2, f2) in zip(expected, got):
        assert np.array_equal(c1, c2) and np.array_equal(f1, f2)
