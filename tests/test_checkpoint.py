"""sivae.train.checkpoint: plain state round-trips, and a kill at any step of a save loses nothing."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch

import sivae.train.checkpoint
import sivae._files
from sivae import InputError
from sivae._constants import FILES
from sivae.train.checkpoint import CheckpointState, load_checkpoint, save_checkpoint
from sivae.data.loaders import CellMatrix
from sivae.nn.module import ModuleConfig, SIVAEModule
from sivae.train.trainer import TrainConfig, Trainer, TrainingData

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = TrainConfig(max_epochs=2, pretrain_epochs=1, batch_size=32, seed=0, patience=100)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(80, 2)) @ rng.normal(size=(2, 12)) + 0.3 * rng.normal(size=(80, 12))).astype(np.float32)
    X = (X - X.mean(0)) / X.std(0)
    return TrainingData(cells=CellMatrix(X), train_idx=np.arange(64), val_idx=np.arange(64, 80),
                        feature_x=torch.from_numpy(rng.normal(size=(12, 5)).astype(np.float32)))


def _trainer(data: TrainingData, config: TrainConfig = TRAIN) -> Trainer:
    torch.manual_seed(0)
    module = SIVAEModule(ModuleConfig(n_features=12, n_latent=2, encoder_hidden=(8,), decoder_hidden=(8,),
                                      n_feature_input=5))
    return Trainer(module, data, config, progress=False)


@pytest.fixture
def checkpoint(data: TrainingData, tmp_path: pathlib.Path) -> pathlib.Path:
    _trainer(data).fit(checkpoint_dir=tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _state(epoch: int) -> CheckpointState:
    weights = {"w": torch.full((3,), float(epoch))}
    return CheckpointState(position={"phase": 0, "epoch": epoch}, module_state=weights,
                           optimizer_state={"state": {0: {"step": torch.tensor(float(epoch))}},
                                            "param_groups": [{"params": [0], "lr": 1e-3}]},
                           stopper={"best": 1.0, "best_epoch": 0, "bad_epochs": 0}, sampler={},
                           history=[{"epoch": epoch}], train_config={}, rng_states=[torch.get_rng_state()])


def test_state_round_trips(tmp_path: pathlib.Path) -> None:
    save_checkpoint(tmp_path, _state(3))
    back = load_checkpoint(tmp_path)
    assert back.position == {"phase": 0, "epoch": 3} and back.history == [{"epoch": 3}]
    assert torch.equal(back.module_state["w"], torch.full((3,), 3.0))
    assert torch.equal(back.optimizer_state["state"][0]["step"], torch.tensor(3.0))


class _Killed(BaseException):
    """Stands for kill -9: no except clause of ours catches it."""


# each step of a save that touches the disk, in order; the kill comes before the step runs, and
# the newest complete checkpoint is the new one only once checkpoint.json has been replaced
_STEPS = [("sivae.train.checkpoint.write_bytes", 1, 1), ("sivae._files.os.replace", 1, 1),
          ("sivae._files.os.replace", 2, 1), ("pathlib.Path.unlink", 3, 2)]  # unlinks 1-2: temporaries


@pytest.mark.parametrize("target,call,newest", _STEPS,
                         ids=["write-tensors", "rename-tensors", "rename-meta", "delete-old"])
def test_a_kill_at_any_step_of_a_save_leaves_the_newest_complete_checkpoint(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, target: str, call: int, newest: int) -> None:
    save_checkpoint(tmp_path, _state(1))
    module, name = target.rsplit(".", 1)
    owner = {"sivae.train.checkpoint": sivae.train.checkpoint, "sivae._files.os": os, "pathlib.Path": pathlib.Path}[module]
    real, calls = getattr(owner, name), []

    def dying(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)
    with pytest.raises(_Killed):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).position["epoch"] == newest
    save_checkpoint(tmp_path, _state(3))  # the next save clears what the kill left
    assert load_checkpoint(tmp_path).position["epoch"] == 3
    tensors = [p.name for p in tmp_path.iterdir() if p.name.endswith(".safetensors")]
    assert len(tensors) == 1


def test_truncated_tensors_are_refused(data: TrainingData, checkpoint: pathlib.Path) -> None:
    tensors = checkpoint / json.loads((checkpoint / FILES.CHECKPOINT_META).read_text())["tensors"]
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    with pytest.raises(InputError, match="unreadable"):
        _trainer(data).fit(checkpoint_dir=checkpoint, resume=True)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"world_size": 1}', '{"tensors": "../../etc/x"}'],
                         ids=["not-json", "not-an-object", "foreign-object", "foreign-tensor-path"])
def test_garbage_metadata_is_refused(data: TrainingData, checkpoint: pathlib.Path, text: str) -> None:
    (checkpoint / FILES.CHECKPOINT_META).write_text(text)
    with pytest.raises(InputError):
        _trainer(data).fit(checkpoint_dir=checkpoint, resume=True)


@pytest.mark.parametrize("position", [{"phase": 7, "epoch": 0}, {"phase": 0, "epoch": 10**6},
                                      {"phase": -1, "epoch": 0}], ids=["phase-7", "huge-epoch", "negative"])
def test_hand_edited_position_is_refused(data: TrainingData, checkpoint: pathlib.Path, position: dict) -> None:
    meta_path = checkpoint / FILES.CHECKPOINT_META
    meta = json.loads(meta_path.read_text())
    meta["position"] = position
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="checkpoint"):
        _trainer(data).fit(checkpoint_dir=checkpoint, resume=True)


def test_resume_without_checkpoint_is_refused(data: TrainingData, tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        _trainer(data).fit(checkpoint_dir=tmp_path / "never-written", resume=True)
    with pytest.raises(InputError, match="checkpoint_dir"):
        _trainer(data).fit(checkpoint_dir=None, resume=True)


def test_checkpoint_from_another_world_size_is_refused(data: TrainingData, checkpoint: pathlib.Path) -> None:
    meta_path = checkpoint / FILES.CHECKPOINT_META
    meta = json.loads(meta_path.read_text())
    meta["world_size"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="processes"):
        _trainer(data).fit(checkpoint_dir=checkpoint, resume=True)


def test_saves_leave_one_checkpoint_and_no_temporaries(data: TrainingData, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "ckpt"
    _trainer(data, TrainConfig(**{**TRAIN.__dict__, "checkpoint_every": 1})).fit(checkpoint_dir=directory)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    meta = json.loads((directory / FILES.CHECKPOINT_META).read_text())
    assert sorted(p.name for p in directory.iterdir()) == sorted([FILES.CHECKPOINT_META, meta["tensors"]])
    assert meta["position"] == {"phase": 3, "epoch": 0}  # the run finished
