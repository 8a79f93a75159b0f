"""Started by tests/test_distributed.py under torchrun: trains with sivae.train.trainer.Trainer on every rank.

Each rank writes what it ended with to OUT_DIR (parameters and history of an uninterrupted run,
and of a run interrupted in joint training and resumed); the test compares ranks and runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from sivae.data.loaders import CellMatrix
from sivae.nn.module import ModuleConfig, SIVAEModule
from sivae.train.trainer import TrainConfig, Trainer, TrainingData

N_CELLS, N_FEATURES, C_RED = 160, 20, 6
CONFIG = ModuleConfig(n_features=N_FEATURES, n_latent=2, encoder_hidden=(16, 8), decoder_hidden=(8, 16),
                      n_feature_input=C_RED)
# 130 training cells: five batches of 32 and one of 2, so rank 1 takes a wrapped-around batch;
# 30 held-out cells: one batch, so rank 1 scores none of them
TRAIN = TrainConfig(max_epochs=4, pretrain_epochs=2, batch_size=32, seed=0, patience=100, checkpoint_every=1)
INTERRUPT_AT = 6  # the 6th epoch: the second of joint training


def _data() -> TrainingData:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N_CELLS, 2))
    X = z @ rng.normal(size=(2, N_FEATURES)) + 0.3 * rng.normal(size=(N_CELLS, N_FEATURES))
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    order = rng.permutation(N_CELLS)
    return TrainingData(cells=CellMatrix(X), train_idx=np.sort(order[:130]), val_idx=np.sort(order[130:]),
                        feature_x=torch.from_numpy(rng.normal(size=(N_FEATURES, C_RED)).astype(np.float32)))


def _trainer(data: TrainingData, seed: int) -> Trainer:
    torch.manual_seed(seed)
    return Trainer(SIVAEModule(CONFIG), data, TRAIN, progress=False)


def _interrupted_then_resumed(data: TrainingData, checkpoint_dir: Path) -> Trainer:
    interrupted = _trainer(data, seed=0)
    original, calls = interrupted._train_epoch, [0]

    def train_epoch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == INTERRUPT_AT:
            raise KeyboardInterrupt  # on every rank at the same epoch, as a Ctrl-C to torchrun
        return original(*args, **kwargs)

    interrupted._train_epoch = train_epoch
    try:
        interrupted.fit(checkpoint_dir=checkpoint_dir)
    except KeyboardInterrupt:
        pass
    resumed = _trainer(data, seed=1)  # its weights come from the checkpoint
    resumed.fit(checkpoint_dir=checkpoint_dir, resume=True)
    return resumed


def _dump(trainer: Trainer, out_dir: Path, name: str) -> None:
    params = torch.cat([p.detach().flatten() for p in trainer.module.parameters()])
    np.save(out_dir / f"{name}.npy", params.numpy())
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in trainer.history]
    requires_grad = all(p.requires_grad for p in trainer.module.parameters())
    (out_dir / f"{name}.json").write_text(json.dumps({"history": history, "requires_grad": requires_grad}))


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        data = _data()
        uninterrupted = _trainer(data, seed=0)
        uninterrupted.fit(checkpoint_dir=out_dir / "uninterrupted")
        _dump(uninterrupted, out_dir, f"uninterrupted-rank{rank}")
        _dump(_interrupted_then_resumed(data, out_dir / "resumed"), out_dir, f"resumed-rank{rank}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
