"""sivae.train.trainer.Trainer and sivae.data.loaders.BlockSampler: seeds, resume, early stopping."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sivae.nn.module
import sivae.train.trainer
from sivae.data.loaders import BlockSampler, CellMatrix
from sivae.nn.module import CellVAE, ModuleConfig, SIVAEModule
from sivae.train.trainer import TrainConfig, Trainer, TrainingData

N_CELLS, N_FEATURES, C_RED = 150, 20, 6
CONFIG = ModuleConfig(n_features=N_FEATURES, n_latent=2, encoder_hidden=(16, 8), decoder_hidden=(8, 16),
                      n_feature_input=C_RED)
# the paper's three steps, each pre-training step stopped on held-out loss; "budget" is tested below
TRAIN = TrainConfig(max_epochs=4, pretrain_epochs=2, batch_size=32, seed=0, patience=100, pretraining="paper")
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


def _interrupted_then_resumed(data: TrainingData, config: TrainConfig, n: int, folder: pathlib.Path) -> Trainer:
    # a run stopped before its n-th epoch, then resumed from its checkpoints by a fresh trainer
    interrupted = _trainer(data, config)
    _interrupt_on_call(interrupted, n)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(checkpoint_dir=folder)
    resumed = Trainer(_module(seed=1), data, config, progress=False)  # weights come from the checkpoint
    resumed.fit(checkpoint_dir=folder, resume=True)
    return resumed


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
    monkeypatch.setattr(sivae.nn.module, "reparameterize", lambda mean, log_var: mean)  # no sampling noise
    module = _module()
    full = Trainer(module, data, TRAIN, progress=False).evaluate(phase)
    # evaluation takes blocks of at least _EVAL_FEATURE_BLOCK; lower it so these blocks are used
    monkeypatch.setattr(sivae.train.trainer, "_EVAL_FEATURE_BLOCK", 1)
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
    assert all(math.isfinite(h["total"]) for h in history)
    # held-out evaluation may skip epochs here (Trainer.eval_interval), never a phase's last one
    last = {h["phase"]: h for h in history}
    assert all(math.isfinite(h["val"]) for h in last.values())
    assert math.isfinite(trainer.evaluate("joint"))


# -- counts for the NB likelihood -----------------------------------------------------------------
def _positions(nonzero: torch.Tensor, n_features: int) -> torch.Tensor:
    return torch.sort(nonzero[0] * n_features + nonzero[1]).values


def test_cell_matrix_lists_the_nonzeros_of_its_rows() -> None:
    counts = sp.random(30, N_FEATURES, density=0.2, random_state=1, format="csr", dtype=np.float32)
    idx = np.array([7, 0, 21, 3])
    counts.data[counts.indptr[idx[0]]] = 0.0  # a stored zero may be listed: NB adds nothing for it
    for source, stored_zeros in ((CellMatrix(counts), 1), (CellMatrix(counts.toarray()), 0)):
        got = _positions(source.nonzero(idx), N_FEATURES)
        rows = source.rows(idx)
        assert set(_positions(rows.nonzero().T, N_FEATURES).tolist()) <= set(got.tolist())
        assert len(got) == (rows != 0).sum() + stored_zeros
    # an entry stored twice is one count, the sum, and is listed once
    twice = sp.csr_matrix((np.array([2.0, 3.0, 1.0], dtype=np.float32), [4, 4, 0], [0, 2, 3]),
                          shape=(2, N_FEATURES))
    assert torch.equal(CellMatrix(twice).nonzero(np.array([0, 1])), torch.tensor([[0, 1], [4, 0]]))


def test_nb_batches_carry_where_the_counts_are_nonzero() -> None:
    counts = sp.random(60, N_FEATURES, density=0.2, random_state=2, format="csr", dtype=np.float32)
    counts.data = np.ceil(counts.data * 50)
    data = TrainingData(cells=CellMatrix(np.log1p(counts.toarray())), train_idx=np.arange(48),
                        val_idx=np.arange(48, 60), counts=CellMatrix(counts))
    config = ModuleConfig(n_features=N_FEATURES, n_latent=2, encoder_hidden=(8,), decoder_hidden=(8,),
                          likelihood="nb")
    trainer = Trainer(CellVAE(config), data, TrainConfig(max_epochs=1, batch_size=16, seed=0), progress=False)
    cells = np.array([5, 40, 2, 17])
    batch = trainer._batch(cells, np.arange(N_FEATURES))
    torch.testing.assert_close(batch.target, torch.from_numpy(counts[cells].toarray()))
    assert torch.equal(_positions(batch.target_nonzero, N_FEATURES),
                       _positions(batch.target.nonzero().T, N_FEATURES))
    # a block of some features: the positions would be in the wrong columns, so none are passed
    assert trainer._batch(cells, np.arange(5)).target_nonzero is None


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


# -- held-out evaluation: encode once, score every block ------------------------------------------
def _block_by_block(trainer: Trainer, phase: str, block: int) -> float:
    # the held-out loss as it was computed before: module.loss on every (cell batch, feature
    # block) pair, each re-running both encoders, weighted by the block's share of the features
    n_features, total, weight = trainer.data.n_features, 0.0, 0
    val = trainer.data.val_idx
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(trainer.config.seed + 1)
        trainer.module.eval()
        for s in range(0, len(val), trainer.config.batch_size):
            cells = val[s : s + trainer.config.batch_size]
            for f in range(0, n_features, block):
                features = np.arange(f, min(f + block, n_features))
                loss = trainer.module.loss(trainer._batch(cells, features), phase).total.item()
                total += loss * len(cells) * len(features) / n_features
            weight += len(cells)
    return total / weight


def _trained_a_little(data: TrainingData) -> SIVAEModule:
    # a few epochs of every phase, so the cell and feature networks are not at their initial values
    trainer = _trainer(data, TrainConfig(**{**TRAIN.__dict__, "max_epochs": 1, "pretrain_epochs": 1}))
    trainer.fit()
    return trainer.module


@pytest.mark.parametrize("phase", ["cell", "feature", "joint"])
def test_heldout_loss_encoded_once_equals_block_by_block(data: TrainingData, monkeypatch: pytest.MonkeyPatch,
                                                          phase: str) -> None:
    module = _trained_a_little(data)
    # 4 batches of held-out cells x 4 blocks of features; without sampling noise the two ways
    # of computing must agree exactly (the noise is compared in the next test)
    monkeypatch.setattr(sivae.nn.module, "reparameterize", lambda mean, log_var: mean)
    monkeypatch.setattr(sivae.train.trainer, "_EVAL_FEATURE_BLOCK", 1)
    config = TrainConfig(**{**TRAIN.__dict__, "batch_size": 8, "feature_batch_size": 5})
    trainer = Trainer(module, data, config, progress=False)
    assert len(trainer._eval_blocks()) == 4 and len(trainer._val_batches()) == 4
    new, old = trainer.evaluate(phase), _block_by_block(trainer, phase, block=5)
    assert new == pytest.approx(old, rel=1e-5, abs=1e-6)
    # and the loss is not insensitive: another model scores differently
    other = Trainer(_module(seed=3), data, config, progress=False)
    assert other.evaluate(phase) != pytest.approx(new, rel=1e-4)  # well beyond the tolerance


@pytest.mark.parametrize("phase", ["cell", "feature", "joint"])
def test_heldout_loss_with_noise_equals_block_by_block(data: TrainingData, phase: str) -> None:
    # one batch of held-out cells and one block: both ways draw the same noise from the fixed
    # seed, features first, so they agree with the sampling noise on
    module = _trained_a_little(data)
    config = TrainConfig(**{**TRAIN.__dict__, "batch_size": 64})
    trainer = Trainer(module, data, config, progress=False)
    assert len(trainer._eval_blocks()) == 1 and len(trainer._val_batches()) == 1
    new, old = trainer.evaluate(phase), _block_by_block(trainer, phase, block=N_FEATURES)
    assert new == pytest.approx(old, rel=1e-5)
    assert trainer.evaluate(phase) == new  # the fixed seed: the same loss every epoch
    if phase != "feature":  # the feature step regresses at the posterior means of z
        torch.manual_seed(7)
        with torch.no_grad():
            trainer.module.eval()
            batch = trainer._batch(data.val_idx, np.arange(N_FEATURES))
            assert trainer.module.loss(batch, phase).total.item() != pytest.approx(new, rel=1e-6)


# -- the public epoch, and evaluation every few epochs ---------------------------------------------
def test_train_epoch_runs_one_pass_and_fit_goes_through_it(data: TrainingData) -> None:
    trainer = _trainer(data)
    run = trainer.begin_phase("joint")
    frozen = trainer.module.cell.weight  # the free v_f of step 1: not trained in the joint step
    assert not frozen.requires_grad
    before = _state(trainer.module)
    out = trainer.train_epoch(run)
    trainer.end_training()
    assert frozen.requires_grad
    assert out["seconds"] > 0 and math.isfinite(out["total"])
    after = trainer.module.state_dict()
    assert torch.equal(before["cell.weight"], after["cell.weight"])
    assert not torch.equal(before["feature_encoder.mean.weight"], after["feature_encoder.mean.weight"])

    calls: list[str] = []
    fitted = _trainer(data)
    original = fitted.train_epoch
    fitted.train_epoch = lambda run, **kwargs: calls.append(run.phase) or original(run, **kwargs)
    fitted.fit()
    assert calls == [phase for phase, _ in EPOCHS]
    assert [(t["phase"], t["epoch"]) for t in fitted.timings] == EPOCHS
    assert all(t["train"] > 0 and t["evaluate"] > 0 for t in fitted.timings)


def test_evaluation_runs_every_few_epochs_when_it_costs_more_than_its_budget(
        data: TrainingData, monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 features per held-out cell against blocks of 2 per training cell: an evaluation costs
    # about a third of an epoch here, so it runs every few epochs, and always on a phase's last
    config = TrainConfig(**{**TRAIN.__dict__, "feature_batch_size": 2, "max_epochs": 7, "patience": 100})
    trainer = _trainer(data, config)
    every = trainer.eval_interval("joint")
    assert every > 1
    monkeypatch.setattr(sivae.train.trainer, "EVAL_BUDGET", 10.0)
    assert trainer.eval_interval("joint") == 1  # a generous budget evaluates every epoch
    monkeypatch.setattr(sivae.train.trainer, "EVAL_BUDGET", 0.1)
    history = trainer.fit()
    joint = [h for h in history if h["phase"] == "joint"]
    evaluated = [h["epoch"] for h in joint if math.isfinite(h["val"])]
    assert evaluated == sorted({*range(every - 1, 7, every), 6})
    # patience counts epochs, not evaluations: patience 1 stops at the first evaluation that
    # does not improve, as it would when evaluating every epoch
    stopping = _trainer(data, TrainConfig(**{**config.__dict__, "patience": every}))
    losses = iter([1.0, 2.0, 0.5, 0.4, 0.3])
    monkeypatch.setattr(stopping, "evaluate", lambda phase: next(losses) if phase == "joint" else 1.0)
    joint = [h for h in stopping.fit() if h["phase"] == "joint"]
    assert len(joint) == 2 * every  # evaluations at every-1 (best) and 2*every-1 (worse): stop


# -- budgeted pre-training (the default) ----------------------------------------------------------
BUDGET = TrainConfig(max_epochs=10, batch_size=32, seed=0, patience=100, checkpoint_every=1, pretraining="budget")


def _steps_per_phase(trainer: Trainer) -> dict[str, int]:
    counts: dict[str, int] = {}
    loss = trainer.module.loss

    def counting_loss(batch, phase):
        if torch.is_grad_enabled():  # training steps; held-out evaluation runs without gradients
            counts[phase] = counts.get(phase, 0) + 1
        return loss(batch, phase)

    trainer.module.loss = counting_loss
    trainer.fit()
    return counts


def test_budgeted_pretraining_takes_a_tenth_of_the_joint_steps(data: TrainingData) -> None:
    # 120 training cells in batches of 32: 4 steps per epoch; a tenth of 10 joint epochs is one
    # epoch of pre-training per step, and 0.3 of an epoch (1 step) at max_epochs=3
    # (step 2 trains on cell sums: an epoch of it is one pass over the 20 features, one block)
    trainer = _trainer(data, BUDGET)
    assert _steps_per_phase(trainer) == {"cell": 4, "feature": 1, "joint": 40}
    short = _trainer(data, TrainConfig(**{**BUDGET.__dict__, "max_epochs": 3}))
    assert _steps_per_phase(short) == {"cell": 1, "feature": 1, "joint": 12}
    assert [(h["phase"], h["epoch"]) for h in short.history][:2] == [("cell", 0), ("feature", 0)]
    paper = _trainer(data, TrainConfig(**{**BUDGET.__dict__, "max_epochs": 3, "pretraining": "paper"}))
    assert _steps_per_phase(paper) == {"cell": 12, "feature": 3, "joint": 12}


def test_finetuning_trains_step_1_whole_and_a_fifth_of_it_after(data: TrainingData) -> None:
    # step 1 as a VAE run (10 epochs of 4 steps); steps 2 and 3 a fifth of its 40 steps each
    # (step 2 on cell sums: a pass over the 20 features is one step)
    finetune = TrainConfig(**{**BUDGET.__dict__, "pretraining": "finetune"})
    assert _steps_per_phase(_trainer(data, finetune)) == {"cell": 40, "feature": 8, "joint": 8}
    short = _trainer(data, TrainConfig(**{**finetune.__dict__, "max_epochs": 3}))
    assert _steps_per_phase(short) == {"cell": 12, "feature": 2, "joint": 2}  # round(0.2 * 12)
    # the cell embedding is step 1's: steps 2 and 3 leave the cell encoder as step 1 left it
    trainer = _trainer(data, finetune)
    snapshots, begin = [], trainer.begin_phase

    def snapshot_then_begin(phase):
        snapshots.append((phase, [p.detach().clone() for p in trainer.module.embedding_parameters()]))
        return begin(phase)

    trainer.begin_phase = snapshot_then_begin
    trainer.fit()
    after_step_1 = dict(snapshots)["feature"]
    assert all(torch.equal(a, b) for a, b in zip(after_step_1, trainer.module.embedding_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(dict(snapshots)["cell"], after_step_1))
    # every step keeps its early stopping; the budget of steps 2 and 3 follows what step 1 ran:
    # 2 epochs (8 steps) give them 2 steps each, one epoch of the joint step
    stopping = _trainer(data, TrainConfig(**{**finetune.__dict__, "patience": 1}))
    stopping.evaluate = lambda phase: 1.0  # never better than the first epoch
    phases = [h["phase"] for h in stopping.fit()]
    assert phases == ["cell", "cell", "feature", "feature", "joint"]


def test_budgeted_pretraining_stops_once_the_training_loss_levels_off(data: TrainingData) -> None:
    config = TrainConfig(**{**BUDGET.__dict__, "pretrain_fraction": 0.5})  # up to 5 epochs each
    never = _trainer(data, TrainConfig(**{**config.__dict__, "pretrain_tolerance": -math.inf})).fit()
    assert [h["epoch"] for h in never if h["phase"] == "cell"] == [0, 1, 2, 3, 4]
    # 1%: stops where an epoch's training loss fell by less than 1% of the one before
    history = _trainer(data, TrainConfig(**{**config.__dict__, "pretrain_tolerance": 0.01})).fit()
    cell = [h["total"] for h in history if h["phase"] == "cell"]
    assert len(cell) < 5 and cell[-2] - cell[-1] < 0.01 * abs(cell[-2])
    assert all(a - b >= 0.01 * abs(a) for a, b in zip(cell[:-2], cell[1:-1]))
    # a tolerance no epoch can meet: each step stops after its second epoch
    lenient = _trainer(data, TrainConfig(**{**config.__dict__, "pretrain_tolerance": 10.0})).fit()
    assert [(h["phase"], h["epoch"]) for h in lenient if h["phase"] != "joint"] == [
        ("cell", 0), ("cell", 1), ("feature", 0), ("feature", 1)]


@pytest.fixture(scope="module")
def uninterrupted_budget(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    config = TrainConfig(**{**BUDGET.__dict__, "max_epochs": 4, "pretrain_fraction": 0.4})
    trainer = _trainer(data, config)
    trainer.fit(checkpoint_dir=tmp_path_factory.mktemp("b") / "ckpt")
    return trainer


@pytest.mark.parametrize("n", [2, 3, 6], ids=["partial-cell-epoch", "first-feature-epoch", "in-joint-training"])
def test_resumed_budgeted_run_matches_uninterrupted_run(data: TrainingData, uninterrupted_budget: Trainer,
                                                        tmp_path: pathlib.Path, n: int) -> None:
    # 0.4 x 4 = 1.6 epochs of pre-training: 7 steps, an epoch of 4 and a partial one of 3
    config = uninterrupted_budget.config
    assert [h["phase"] for h in uninterrupted_budget.history] == ["cell"] * 2 + ["feature"] * 2 + ["joint"] * 4
    resumed = _interrupted_then_resumed(data, config, n, tmp_path / "ckpt")
    _assert_same_state(uninterrupted_budget.module.state_dict(), resumed.module.state_dict())
    assert _without_timings(resumed.history) == _without_timings(uninterrupted_budget.history)


def test_a_finetune_step_longer_than_max_epochs_resumes(data: TrainingData, tmp_path: pathlib.Path) -> None:
    # step 2 (on cell sums: one step per pass over the features) plans round(1.0 * 2 epochs x 4 steps)
    # = 8 epochs, more than max_epochs = 2: a checkpoint inside it is this model's, not an edited one
    config = TrainConfig(**{**BUDGET.__dict__, "pretraining": "finetune", "max_epochs": 2, "finetune_fraction": 1.0})
    whole = _trainer(data, config)
    whole.fit()
    assert [h["phase"] for h in whole.history].count("feature") == 8
    resumed = _interrupted_then_resumed(data, config, 2 + 5, tmp_path / "ckpt")  # step 2's 5th epoch
    _assert_same_state(whole.module.state_dict(), resumed.module.state_dict())
    assert _without_timings(resumed.history) == _without_timings(whole.history)
