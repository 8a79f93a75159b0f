"""Training modes: how siVAE's three steps share a run, one class each, and their registry.

A mode decides, for each step (phase) of a module's ``phases``: how long it trains (`plan`),
which parameters train (`frees_embedding`), and how it stops (held-out early stopping, or
`converged` on the training loss). A VAE or LDVAE has one step, the last, which every mode trains
up to ``max_epochs`` with early stopping on held-out loss. The settings a mode reads are fields
of train_config.TrainConfig marked with its name (``setting(..., mode=...)``).

A new mode is one new class here, decorated with `register`: the trainer, ``SIVAE.train``'s
``pretraining`` argument, ``sivae fit --pretraining`` and the benchmarks read `TRAINING_MODES`.
Plans are pure functions of the settings and the history, so a resumed run plans as the
uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .schedule import converged


@dataclass(frozen=True)
class Plan:
    """How one step trains: ``epochs``, the steps of its last epoch (None: a whole one), and whether
    it stops on its training loss levelling off (`TrainingMode.stops`) instead of held-out patience."""

    epochs: int
    last_steps: int | None = None
    on_training_loss: bool = False


TRAINING_MODES: dict[str, type[TrainingMode]] = {}


def register(cls: type[TrainingMode]) -> type[TrainingMode]:
    """Add a mode to `TRAINING_MODES` under its ``name``."""
    TRAINING_MODES[cls.name] = cls
    return cls


def _steps(steps: int, steps_per_epoch: int, on_training_loss: bool) -> Plan:
    # ``steps`` minibatch steps as whole epochs and a last, partial one
    n_epochs = -(-steps // steps_per_epoch)
    return Plan(n_epochs, steps - (n_epochs - 1) * steps_per_epoch, on_training_loss)


class TrainingMode:
    """The paper's schedule, which the other modes refine: each pre-training step trains to its own
    early stop on held-out loss, up to ``pretrain_epochs`` (None: ``max_epochs``) epochs, then the
    joint step, every parameter free, up to ``max_epochs``."""

    name: ClassVar[str]

    def pretrain_budget(self, config: Any) -> float:
        """Epochs (a fraction allowed where a mode plans in steps) each pre-training step may train."""
        return float(config.max_epochs if config.pretrain_epochs is None else config.pretrain_epochs)

    def plan(self, config: Any, i: int, n_phases: int, steps_per_epoch: int, first_step_ran: int | None,
             cell_steps_per_epoch: int) -> Plan:
        """Step ``i`` of ``n_phases``: its epochs of ``steps_per_epoch`` minibatch steps.

        ``first_step_ran`` is the epochs step 1 has run (None before it has), and
        ``cell_steps_per_epoch`` the steps of a pass over the cells.
        """
        if i == n_phases - 1:
            return Plan(config.max_epochs)
        return Plan(math.ceil(self.pretrain_budget(config)))

    def frees_embedding(self, i: int) -> bool:
        """Whether step ``i`` trains the cell embedding's parameters (the cell-wise encoder)."""
        return True

    def stops(self, config: Any, history: list[dict], phase: str, loss: float) -> bool:
        """For a plan ``on_training_loss``: True once ``phase`` should stop at training loss ``loss``."""
        raise NotImplementedError(f"the {self.name!r} mode plans no step that stops on its training loss")


@register
class Paper(TrainingMode):
    """``"paper"``: the paper's three steps as `TrainingMode` describes. Step 1 alone costs what a
    whole VAE run costs, and the joint step moves the cell embedding (on pbmc3k, K=10, 15-NN
    accuracy 0.931 and 0.927 for seeds 0 and 1 against the VAE's 0.937)."""

    name = "paper"


@register
class Finetune(TrainingMode):
    """``"finetune"`` (default): step 1 trains as the paper's does (a VAE run with free feature
    vectors, up to ``pretrain_epochs`` or ``max_epochs``, early stopping), scoring features exactly
    as a VAE does, so its cell embedding is the VAE's with the same seed. The cell-wise encoder is
    then frozen: step 2 fits the feature-wise networks to the decoder it learned (on sums over the
    cells, module.CellStatistics, an epoch of it one pass over the features) and step 3 trains the
    decoders and the feature-wise networks jointly. Steps 2 and 3 each take at most
    ``finetune_fraction`` of the minibatch steps step 1 took (at least one; a step of step 2 is a
    block of ``batch_size`` features), still stopping early on held-out loss. A run costs 1.25-1.5
    VAE runs (benchmarks/run_cost.py), whatever ``max_epochs`` and however early step 1 stops; the
    embedding is a VAE's and the loadings explain it."""

    name = "finetune"

    def plan(self, config: Any, i: int, n_phases: int, steps_per_epoch: int, first_step_ran: int | None,
             cell_steps_per_epoch: int) -> Plan:
        if i == 0:
            return super().plan(config, i, n_phases, steps_per_epoch, first_step_ran, cell_steps_per_epoch)
        # steps 2 and 3 refine what step 1 trained: each takes at most a fraction of the
        # minibatch steps step 1 took (before step 1 has run, of the most it may take)
        ran = first_step_ran or math.ceil(self.pretrain_budget(config))
        steps = max(1, round(config.finetune_fraction * ran * cell_steps_per_epoch))
        return _steps(steps, steps_per_epoch, on_training_loss=False)

    def frees_embedding(self, i: int) -> bool:
        return i == 0  # the cell embedding is step 1's: later steps fit the loadings to it


@register
class Budget(TrainingMode):
    """``"budget"``: each pre-training step trains for at most ``pretrain_fraction`` of the joint
    step's ``max_epochs`` (counted in minibatch steps, at least one step, so 0.3 of an epoch at
    max_epochs=3), stops sooner once an epoch lowers the training loss by less than
    ``pretrain_tolerance`` (relative), not on held-out patience (its held-out loss is only recorded,
    at the cost of one forward pass over the held-out cells). The joint step trains every parameter
    the steps before it touched, so they only need to hand it a sensible start. On pbmc68k_reduced
    at K=2 (tests/test_end_to_end.py) its 15-NN accuracy fell to 0.621 with the 1% tolerance (step 1
    stopped after 3 epochs) and 0.734 with tolerance 0 (10 epochs), against the VAE's 0.787; step 1
    needs to run near convergence at small K."""

    name = "budget"

    def pretrain_budget(self, config: Any) -> float:
        if config.pretrain_epochs is not None:
            return float(config.pretrain_epochs)
        return config.pretrain_fraction * config.max_epochs

    def plan(self, config: Any, i: int, n_phases: int, steps_per_epoch: int, first_step_ran: int | None,
             cell_steps_per_epoch: int) -> Plan:
        if i == n_phases - 1:
            return Plan(config.max_epochs)
        budget = self.pretrain_budget(config)
        steps = 0 if budget <= 0 else max(1, round(budget * steps_per_epoch))
        return _steps(steps, steps_per_epoch, on_training_loss=True)

    def stops(self, config: Any, history: list[dict], phase: str, loss: float) -> bool:
        return converged(history, phase, loss, config.pretrain_tolerance)
