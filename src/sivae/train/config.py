"""What the trainer is given: its settings (TrainConfig) and its data (TrainingData), and the one
rule for how many features a step scores when the user does not choose."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ._cpu import SUBNORMALS
from ..data.loaders import CellMatrix
from .modes import TRAINING_MODES, TrainingMode
from ..settings import Interval, check, document, setting


@document
@dataclass(frozen=True)
class TrainConfig:
    """How a model is optimised: every setting the trainer reads, declared once (sivae.settings).

    Epoch counts are passes over the training cells. ``pretraining`` names the training mode
    (modes.py: how siVAE's three steps share the run, one class per mode; `TRAINING_MODES` lists
    them); a VAE or LDVAE has one step, trained up to ``max_epochs`` with early stopping on
    held-out loss, in every mode. The settings marked for one mode are read by that mode alone.
    ``pretrain_epochs``, when given, replaces the pre-training budget of "paper" and "budget" and
    step 1's limit in "finetune". benchmarks/run_cost.py measures each mode against a VAE.

    A model (config.ModelConfig) saves the settings it shares with this class (batch_size ...
    seed) and hands them over; `shared_with` names them.
    """

    max_epochs: int = setting(200, "passes over the training cells in the last (joint) step",
                              range=Interval(1), cli="--epochs")
    # "paper" against max_epochs // 4 on pbmc68k_reduced (K=2, 100 epochs) 15-NN accuracy moved by
    # -1.5, +0.5 and +1.8 points for seeds 0, 2 and 3: no clear gain there, but no early cut-off.
    pretrain_epochs: int | None = setting(
        None, "epoch limit of each pre-training step (siVAE's steps 1 and 2); None: as the mode says",
        range=Interval(0))
    pretraining: str = setting(
        "finetune", "training mode, how siVAE's three steps share the run: finetune (a VAE run, then "
        "the feature side fit to it; 1.25-1.5x a VAE run), paper (each step to its own early stop, "
        "every parameter free in the joint step; 2-3x) or budget (short pre-training, then a full "
        "joint step); see sivae.train.modes", choices=TRAINING_MODES)
    pretrain_fraction: float = setting(
        0.1, "share of max_epochs each pre-training step may train", range=Interval(0), mode="budget")
    # 0.01 stopped step 1 after 3 epochs: too early (modes.Budget)
    pretrain_tolerance: float = setting(
        0.0, "a pre-training step stops once an epoch lowers its training loss by less than this share",
        mode="budget")
    finetune_fraction: float = setting(
        0.2, "share of step 1's minibatch steps that steps 2 and 3 may each take", range=Interval(0),
        mode="finetune")
    batch_size: int = setting(256, "cells per training step", range=Interval(1))
    feature_batch_size: int | None = setting(
        None, "features scored per training step; None: all up to a limit (default_feature_batch); "
        "every loss term is rescaled, so any block estimates the full objective", range=Interval(1))
    learning_rate: float = setting(1e-3, "Adam's learning rate (it diverges beyond 1; 1e-3 is usual)",
                                   range=Interval(0, 1, low_closed=False, high_closed=True))
    l2: float = setting(1e-3, "L2 weight on weight matrices, as Adam's coupled weight decay (the "
                              "gradient of l2 * ||W||^2 / 2 per step)", range=Interval(0))
    patience: int = setting(20, "epochs without a better held-out loss before a step stops", range=Interval(1))
    grad_clip: float = setting(5.0, "gradient norm clipped to this per step; 0: no clipping", range=Interval(0))
    checkpoint_every: int = setting(10, "epochs between checkpoints (with a checkpoint folder)",
                                    range=Interval(1))
    seed: int = setting(0, "seed of everything random", range=Interval(0, 2**32))
    subnormals: str = setting(
        "flush", "subnormal floats on the CPU (_cpu.py): flush (to zero on every thread of torch's "
        "OpenMP team, and zeroed in the weights after each epoch), zero (on the calling thread and in "
        "the weights only) or off", choices=SUBNORMALS)

    def check(self) -> None:
        """Refuse a setting of the wrong type or out of range, with one sentence."""
        check(self)

    @property
    def mode(self) -> TrainingMode:
        """The training mode ``pretraining`` names."""
        return TRAINING_MODES[self.pretraining]()


def shared_with(cls: type) -> tuple[str, ...]:
    """TrainConfig's settings that ``cls`` (a model's config) also declares, to hand over."""
    names = {f.name for f in fields(cls)}
    return tuple(f.name for f in fields(TrainConfig) if f.name in names)


def default_feature_batch(n_features: int, batch_size: int, *, feature_path: bool) -> int:
    """Features scored per training step when the user does not choose: the one place this is decided.

    A VAE scores a feature for B x H multiply-adds, so it takes all features up to 2,048 per
    step. siVAE also runs each scored feature through the feature-wise networks (C_red x 1024 ...
    1024: about 1.3M multiply-adds, what one cell costs the cell-wise networks), so it scores
    about two features per cell in the batch, at least 512. This keeps a step near a VAE's cost
    (benchmarks/train_speed.py) and matched the VAE's 15-NN accuracy on pbmc68k_reduced as
    closely as scoring all 765 features did. Every loss term is rescaled, so any block size
    estimates the full objective without bias. "nb" always scores every feature (eq. 15's
    softmax runs over all of them).
    """
    block = max(512, 2 * batch_size) if feature_path else 2048
    return min(block, n_features)


@dataclass
class TrainingData:
    """What the trainer reads: encoder input for all cells, the split, and the feature input."""

    cells: CellMatrix  # scaled values, all cells (training and held out)
    train_idx: np.ndarray
    val_idx: np.ndarray
    feature_x: torch.Tensor | None = None  # (F, C_red) input of the feature-wise encoder
    counts: CellMatrix | None = None  # raw counts, likelihood "nb" only
    fingerprint: dict | None = None  # checkpoint.data_fingerprint: a resume must be on the same data
    # every cell's covariates (models.covariates.CellCovariates: .rows(idx, device)); None without
    covariates: Any = None

    @property
    def n_features(self) -> int:
        return self.cells.n_features
