"""How long each training step runs and when it stops: a step's plan, early stopping.

Pure functions of the config and the history, so a resumed run plans as the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .train_config import TrainConfig


@dataclass
class Stopper:
    """Early stopping on held-out loss, keeping the best epoch's weights."""

    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, loss: float, epoch: int, module: nn.Module, epochs: int = 1) -> bool:
        """Record the held-out loss of ``epochs`` epochs ending at ``epoch``; True: stop training."""
        if loss < self.best - 1e-4 * abs(self.best if math.isfinite(self.best) else 0.0):
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        self.bad_epochs += epochs
        return self.bad_epochs >= self.patience


def plan(config: TrainConfig, phases: tuple[str, ...], i: int, steps_per_epoch: int,
         cell_steps_per_epoch: int, history: list[dict]) -> tuple[int, int | None, bool]:
    """Phase ``i``'s (epochs, steps of its last epoch or None for a whole one, stop on training loss?).

    ``steps_per_epoch`` is phase ``i``'s, ``cell_steps_per_epoch`` that of a pass over the cells.
    """
    last = i == len(phases) - 1
    if config.pretraining == "finetune" and i > 0:
        # steps 2 and 3 refine what step 1 trained: each takes at most a fraction of the
        # minibatch steps step 1 took (before step 1 has run, of the most it may take)
        ran = sum(h["phase"] == phases[0] for h in history) or config.epochs_for(phases[0], False)
        steps, budgeted = max(1, round(config.finetune_fraction * ran * cell_steps_per_epoch)), False
    elif config.pretraining == "budget" and not last:
        budget, budgeted = config.pretrain_budget(), True
        steps = 0 if budget <= 0 else max(1, round(budget * steps_per_epoch))
    else:
        return config.epochs_for(phases[i], last), None, False
    n_epochs = -(-steps // steps_per_epoch)
    return n_epochs, steps - (n_epochs - 1) * steps_per_epoch, budgeted


def converged(history: list[dict], phase: str, loss: float, tolerance: float) -> bool:
    """Budgeted pre-training stops once an epoch lowers the training loss by less than ``tolerance``
    (relative); read from the history, so a resumed run decides as the uninterrupted one."""
    previous = [h["total"] for h in history if h["phase"] == phase]
    return bool(previous) and previous[-1] - loss < tolerance * abs(previous[-1])


def count_flops(fn: Callable[[], Any]) -> int:
    """Multiply-adds ``fn`` runs, counted from the operands' shapes (the same on every run and rank);
    the trainer weighs held-out evaluation against a training epoch with it."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
