"""The three-step trainer: optimisation, early stopping, progress (checkpoint files: checkpoint.py).

It knows modules only through ``phases``, ``phase_parameters(phase)`` and ``loss(batch, phase)``,
and data only through a row source and a block sampler (data/loaders.py). Inside a
``torch.distributed`` process group (e.g. under ``torchrun``) each rank trains on its share of the
batches and DistributedDataParallel averages the gradients, so all ranks hold the same model.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ._cpu import subnormals_handled, zero_subnormals
from .._errors import InputError, TrainingDiverged
from .checkpoint import CheckpointState, data_fingerprint, load_checkpoint, save_checkpoint
from ..data.loaders import BlockSampler
from ..distributed import all_reduce_sum, distributed_context, phase_loss, reduce_over_ranks
from ..nn.module import Batch, CellStatistics, Losses
from .modes import TRAINING_MODES, Plan
from .schedule import PhaseRun, Stopper, adam, count_flops
from .config import TrainConfig, TrainingData, default_feature_batch

__all__ = ["TRAINING_MODES", "PhaseRun", "TrainConfig", "Trainer", "TrainingData", "data_fingerprint",
           "default_feature_batch", "distributed_context"]


_EVAL_FEATURE_BLOCK = 4096  # features per held-out loss evaluation step, at least
# Held-out evaluation may cost at most this share of a training epoch's multiply-adds; where one
# would cost more (many features, few training cells), it runs every few epochs instead.
EVAL_BUDGET = 0.1


class Trainer:
    """Runs a module's training phases in order, each with early stopping on held-out cells.

    Inside a process group every rank must build its Trainer on the same data and module and call
    ``fit`` (and ``evaluate``) together: both run collectives. ``config.pretraining`` names the
    training mode (modes.py), ``config.subnormals`` the CPU numerics (`numerics`).
    """

    def __init__(self, module: nn.Module, data: TrainingData, config: TrainConfig, *,
                 device: torch.device | str = "cpu", progress: bool = True) -> None:
        config.check()
        self.module, self.data, self.config = module, data, config
        self.mode = config.mode
        self.device = torch.device(device)
        self.progress = progress
        self.rank, self.world_size = distributed_context() or (0, 1)
        self.sampler = BlockSampler(
            data.train_idx, data.n_features, batch_size=config.batch_size,
            feature_batch_size=self._feature_block(module.phases[-1]), seed=config.seed,
            rank=self.rank, world_size=self.world_size,
        )
        self.history: list[dict[str, Any]] = []
        # seconds of each epoch's parts: {"phase", "epoch", "train", "evaluate", "train_cpu",
        # "evaluate_cpu"} (not in checkpoints, which keep only what a resumed run must reproduce)
        self.timings: list[dict[str, Any]] = []
        self.library = None if data.counts is None else torch.from_numpy(data.counts.row_sums())
        self._trainable: dict[int, bool] | None = None
        # cell sums for a step whose loss reads cells only through them: {"train", "val"}
        self._statistics: dict[str, CellStatistics] | None = None
        self._in_numerics = False  # inside `numerics` (fit): train_epoch need not enter it again

    @contextmanager
    def numerics(self) -> Iterator[None]:
        """Subnormal floats on the CPU as ``config.subnormals`` says (_cpu.subnormals_handled), for
        the duration; ``fit`` runs inside it, and so does a ``train_epoch`` called on its own."""
        if self._in_numerics:
            yield
            return
        self._in_numerics = True
        try:
            with subnormals_handled(self.device, self.config.subnormals):
                yield
        finally:
            self._in_numerics = False

    # -- batches --------------------------------------------------------------------------------
    def _feature_block(self, phase: str) -> int:
        """Features each training step of ``phase`` scores.

        The user's ``feature_batch_size``, else default_feature_batch's rule: the cell-wise step
        has free feature vectors and no feature-wise networks to run, so it scores features as a
        VAE does (siVAE's step 1 is then the VAE's run, step for step); the steps with the
        feature-wise networks score fewer per step. "nb" scores every feature (eq. 15's softmax).
        """
        n_features = self.data.n_features
        if self.module.config.likelihood == "nb":
            return n_features
        block = self.config.feature_batch_size or default_feature_batch(
            n_features, self.config.batch_size,
            feature_path=self.data.feature_x is not None and phase != "cell")
        if phase in getattr(self.module, "statistics_phases", ()) and not self.config.feature_batch_size:
            # a step on cell sums runs only the feature-wise networks: batch_size features cost
            # about a cell step, and smaller blocks take more steps per pass (pbmc3k, K=10: held-out
            # loss 57.5 after 20 passes of 128-feature blocks, 63.4 with 512)
            block = self.config.batch_size
        return min(block, n_features)

    def _batch(self, cell_idx: np.ndarray | None, feature_idx: np.ndarray) -> Batch:
        if self._statistics is not None:  # the step's loss reads cells only through their sums
            return self._feature_batch(feature_idx, self._statistics["train"])
        return self._block(self._cell_rows(cell_idx), feature_idx)

    def _feature_batch(self, feature_idx: np.ndarray, statistics: CellStatistics) -> Batch:
        batch = self._block(self._cell_rows(None), feature_idx)
        batch.statistics = statistics
        return batch

    @torch.no_grad()
    def _cell_statistics(self, cells: np.ndarray) -> CellStatistics:
        """module.cell_statistics summed over ``cells`` (this rank's share, then all ranks')."""
        self.module.eval()
        size = self.config.batch_size * 4
        chunks = [cells[s : s + size] for s in range(0, len(cells), size)][self.rank :: self.world_size]
        total = None
        for chunk in chunks:
            rows = self._cell_rows(chunk)
            part = self.module.cell_statistics(rows[0], **rows[4])
            total = part if total is None else total + part
        if total is None:  # no cells on this rank: zeros of the right shapes
            rows = self._cell_rows(self.data.train_idx[:1])
            shapes = self.module.cell_statistics(rows[0], **rows[4])
            total = CellStatistics(0.0, *(torch.zeros_like(t) for t in shapes.as_tensors()))
        if self.world_size > 1:
            tensors = total.as_tensors()
            total = CellStatistics(all_reduce_sum([total.n], self.device)[0],
                                   *(reduce_over_ranks(t) for t in tensors))
        return total

    def _cell_rows(self, cell_idx: np.ndarray | None) -> tuple[Any, ...]:
        # (x, counts, library, where counts are nonzero, {"cat_covs", "cont_covs"}) of a batch of
        # cells, read once for every block
        covariates = self.data.covariates
        covs = ({"cat_covs": None, "cont_covs": None} if cell_idx is None or covariates is None
                else covariates.rows(cell_idx, self.device))
        if cell_idx is None:
            return None, None, None, None, covs
        x = self.data.cells.rows(cell_idx).to(self.device)
        if self.data.counts is None:
            return x, None, None, None, covs
        counts, nonzero = self.data.counts.rows(cell_idx), self.data.counts.nonzero(cell_idx)
        return x, counts, self.library[torch.from_numpy(cell_idx)].to(self.device), nonzero.to(self.device), covs

    def _block(self, rows: tuple[Any, ...], feature_idx: np.ndarray) -> Batch:
        x, counts, library, nonzero, covs = rows
        fidx = torch.from_numpy(np.asarray(feature_idx, dtype=np.int64))
        feature_x = None if self.data.feature_x is None else self.data.feature_x[fidx].to(self.device)
        everything = len(fidx) == self.data.n_features  # the sampler's blocks are sorted: all, in order
        target = None
        if counts is not None:
            target = (counts if everything else counts[:, fidx]).to(self.device)
        elif x is not None:
            target = x if everything else x[:, fidx.to(self.device)]
        return Batch(
            x=x, target=target, feature_idx=fidx.to(self.device), feature_x=feature_x,
            n_cells=len(self.data.train_idx), n_features=self.data.n_features, library=library,
            target_nonzero=nonzero if everything else None,  # positions in all features' columns
            **covs,
        )

    # -- one epoch, one evaluation ----------------------------------------------------------------
    def begin_phase(self, phase: str) -> PhaseRun:
        """Set up training step ``phase``: only its parameters train, under a fresh Adam.

        ``fit`` runs every step through ``begin_phase`` and ``train_epoch``, and benchmarks time
        epochs the same way. ``end_training`` gives the other parameters back their requires_grad.
        """
        if self._trainable is None:
            self._trainable = {id(p): p.requires_grad for p in self.module.parameters()}
        self._train_only(phase, self._trainable)
        self.sampler.feature_batch_size = self._feature_block(phase)
        self._statistics = None
        if phase in getattr(self.module, "statistics_phases", ()):
            # the cell-wise half is fixed in this step: sum what its loss needs once, then every
            # step trains on a block of features alone (module.CellStatistics)
            self._statistics = {"train": self._cell_statistics(self.data.train_idx),
                                "val": self._cell_statistics(self.data.val_idx)}
        optimizer, params = self._optimizer(phase)
        return PhaseRun(phase=phase, optimizer=optimizer, params=params, loss_fn=phase_loss(self.module, self.device, self.world_size))

    def end_training(self) -> None:
        """Undo ``begin_phase``'s freezing: every parameter's requires_grad as before training."""
        if self._trainable is not None:
            for p in self.module.parameters():
                p.requires_grad_(self._trainable[id(p)])
        self._trainable = None
        self._statistics = None

    def train_epoch(self, run: PhaseRun, max_steps: int | None = None) -> dict[str, float]:
        """One pass over this rank's training batches of ``run.phase`` (its first ``max_steps``).

        Returns
        -------
        The mean of each loss term over the epoch's steps (over all ranks), and ``"seconds"``: the
        epoch's wall time, batch assembly, forward, backward and optimiser steps included.
        """
        with self.numerics():
            t0 = time.perf_counter()
            losses = self._train_epoch(run.phase, run.optimizer, run.params, run.loss_fn, max_steps)
            if self.device.type == "cpu" and self.config.subnormals != "off":
                zero_subnormals(run.params, run.optimizer)  # whichever thread wrote them (_cpu.py)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return {**losses, "seconds": time.perf_counter() - t0}

    def _train_epoch(self, phase: str, optimizer: torch.optim.Optimizer, params: list,
                     loss_fn: Callable[[Batch, str], Losses], max_steps: int | None = None) -> dict:
        self.module.train()
        sums: dict[str, float] = {}
        n = 0
        # the sampler draws the whole epoch's order up front, so stopping early leaves its
        # generator where a whole epoch would (a resumed run continues the same sequence)
        if self._statistics is not None:  # a pass over the features: cells enter through their sums
            n_steps = self._steps_per_epoch(phase)
            blocks = self.sampler.feature_batches(n_steps * self.world_size)[self.rank :: self.world_size]
            pairs: Iterable = ((None, block) for block in blocks)
        else:
            pairs = self.sampler.epoch()
        for cell_idx, feature_idx in pairs:
            if max_steps is not None and n >= max_steps:
                break
            losses: Losses = loss_fn(self._batch(cell_idx, feature_idx), phase)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            optimizer.step()
            for k, v in losses.as_floats().items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        if self.world_size > 1:  # every rank took n steps: the mean over all ranks' steps
            keys = list(sums)  # the same order on every rank: Losses.as_floats()
            *totals, n = all_reduce_sum([sums[k] for k in keys] + [n], self.device)
            sums = dict(zip(keys, totals))
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _eval_blocks(self) -> list[np.ndarray]:
        # Blocks only bound memory here: every feature is scored against each encoded batch.
        fbs = max(self.sampler.feature_batch_size, _EVAL_FEATURE_BLOCK)
        n_features = self.data.n_features
        return [np.arange(s, min(s + fbs, n_features)) for s in range(0, n_features, fbs)]

    def _val_batches(self) -> list[np.ndarray]:
        # this rank's batches of held-out cells
        val = self.data.val_idx
        batches = [val[s : s + self.config.batch_size] for s in range(0, len(val), self.config.batch_size)]
        return batches[self.rank :: self.world_size]

    def _encode_features(self, block: np.ndarray, phase: str) -> Any:
        feature_x = None if self.data.feature_x is None else self.data.feature_x[block].to(self.device)
        return self.module.encode_features(feature_x, phase)

    @torch.no_grad()
    def evaluate(self, phase: str) -> float:
        """Held-out loss of the phase, with a fixed noise seed so epochs compare fairly.

        Each feature block passes the feature-wise networks once per evaluation and each batch of
        held-out cells passes the cell-wise networks once; ``module.score`` then scores every
        (batch, block) pair. In a process group each rank scores every world_size-th batch of
        held-out cells and the sums are all-reduced, so every rank returns the same loss (and
        stops at the same epoch).
        """
        self.module.eval()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        if phase in getattr(self.module, "statistics_phases", ()):  # a mean over the held-out cells
            cached = self._statistics is not None
            val = self._statistics["val"] if cached else self._cell_statistics(self.data.val_idx)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + 1)
                if val.n == 0:
                    return 0.0
                return sum(self.module.loss(self._feature_batch(block, val), phase).total.item()
                           * len(block) / self.data.n_features for block in self._eval_blocks())
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.seed + 1)
            blocks = self._eval_blocks()
            features = [self._encode_features(block, phase) for block in blocks]  # (F, H) in all
            total, weight = 0.0, 0
            for cells in self._val_batches():
                rows = self._cell_rows(cells)
                encoded = self.module.encode_cells(rows[0], phase, **rows[4])
                for block, encoded_block in zip(blocks, features):
                    loss = self.module.score(self._block(rows, block), encoded, encoded_block, phase)
                    # each block's loss already estimates all features: weight it by its share
                    total += loss.total.item() * len(cells) * len(block) / self.data.n_features
                weight += len(cells)
        if self.world_size > 1:
            total, weight = all_reduce_sum([total, weight], self.device)
        return total / max(weight, 1)

    @torch.no_grad()
    def eval_interval(self, phase: str) -> int:
        """Epochs between held-out evaluations of ``phase``: 1 unless one costs over ``EVAL_BUDGET``.

        An evaluation scores every feature of every held-out cell, a training epoch a block of
        features per batch of training cells, so with many features and few training cells (e.g.
        240k features x 8k cells) an evaluation can cost a sizeable share of an epoch. Costs are
        multiply-adds counted from a few cells' and features' shapes (torch's FlopCounterMode: per
        cell encoded, per feature encoded, per cell x feature scored; a training step counts 3x
        its forward pass), not timed, so every run and every rank picks the same interval. The
        last epoch of a phase is always evaluated, and patience stays counted in epochs.
        """
        few = 4  # the counts are linear in cells and in features: a few of each tell the rate
        cells = self.data.train_idx[:few]  # the same on every rank, so all ranks agree
        features = np.arange(min(few, self.data.n_features))
        if len(self.data.val_idx) == 0 or len(cells) == 0 or phase in getattr(self.module, "statistics_phases", ()):
            return 1  # a step trained on cell sums evaluates on sums too: one pass over the features
        self.module.eval()
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            rows = self._cell_rows(cells)
            encoded = self.module.encode_cells(rows[0], phase, **rows[4])
            per_cell = count_flops(lambda: self.module.encode_cells(rows[0], phase, **rows[4])) / len(cells)
            encoded_features = self._encode_features(features, phase)
            per_feature = count_flops(lambda: self._encode_features(features, phase)) / len(features)
            per_pair = count_flops(lambda: self.module.score(
                self._block(rows, features), encoded, encoded_features, phase)) / (len(cells) * len(features))
        batch, block = self.config.batch_size, self.sampler.feature_batch_size
        step = 3 * (batch * per_cell + block * per_feature + batch * block * per_pair)
        epoch = step * self.sampler.steps_per_epoch()
        # this rank's share: the held-out cells are split between ranks, the features are not
        n_val, n_features = len(self.data.val_idx) / self.world_size, self.data.n_features
        evaluation = n_val * per_cell + n_features * per_feature + n_val * n_features * per_pair
        return max(1, math.ceil(evaluation / (EVAL_BUDGET * max(epoch, 1))))

    # -- the whole run --------------------------------------------------------------------------
    def _optimizer(self, phase: str) -> tuple[torch.optim.Optimizer, list]:
        params = [p for p in self.module.phase_parameters(phase) if p.requires_grad]
        return adam(params, learning_rate=self.config.learning_rate, l2=self.config.l2, device=self.device), params

    def _train_only(self, phase: str, trainable: dict[int, bool]) -> None:
        # DDP registers the parameters that require grad when it is built: exactly this phase's
        ours = {id(p) for p in self.module.phase_parameters(phase)}
        if not self.mode.frees_embedding(list(self.module.phases).index(phase)):
            ours -= {id(p) for p in self.module.embedding_parameters()}
        for p in self.module.parameters():
            p.requires_grad_(trainable[id(p)] and id(p) in ours)

    def _checkpoint(self, directory, optimizer, stopper: Stopper, position: dict) -> None:
        """Rank 0 writes, with every rank's RNG state; the others wait until the folder is whole."""
        rng = torch.get_rng_state()  # the CPU generator's, as a single process saves
        rng_states = [rng]
        if self.world_size > 1:
            rng_states = [torch.empty_like(rng, device=self.device) for _ in range(self.world_size)]
            dist.all_gather(rng_states, rng.to(self.device))
        if self.rank == 0:
            save_checkpoint(directory, CheckpointState(
                position=position, module_state=self.module.state_dict(),
                optimizer_state=optimizer.state_dict(),
                stopper={k: v for k, v in asdict(stopper).items() if k != "best_state"},
                sampler=self.sampler.state_dict(), history=self.history,
                train_config=asdict(self.config), world_size=self.world_size, data=self.data.fingerprint,
                rng_states=[state.cpu() for state in rng_states], best_state=stopper.best_state,
            ))
        if self.world_size > 1:
            nccl = dist.get_backend() == "nccl" and self.device.index is not None
            dist.barrier(device_ids=[self.device.index] if nccl else None)

    def _restore(self, directory) -> CheckpointState:
        """Load a checkpoint into the module, RNG, sampler and history; checked before touching them."""
        state = load_checkpoint(directory, rank=self.rank, data=self.data.fingerprint)
        where = f"the checkpoint in {directory}"
        if state.world_size != self.world_size:
            raise InputError(f"{where} was written by {state.world_size} processes but this run has "
                             f"{self.world_size}; resume with the same number of processes")
        n_phases, at = len(self.module.phases), state.position
        known = at["phase"] < n_phases or at == {"phase": n_phases, "epoch": 0}
        # a finetune step may plan more epochs than max_epochs (its epochs are passes over the features)
        if not known or (at["phase"] < n_phases and at["epoch"] > max(
                self.config.max_epochs, self._plan(at["phase"], state.history).epochs)):
            raise InputError(f"{where} points at phase {state.position['phase']}, epoch "
                             f"{state.position['epoch']}, which this model does not have (it was "
                             "edited or belongs to another model); delete it and train afresh")
        previous = {k: v.clone() for k, v in self.module.state_dict().items()}
        try:
            self.module.load_state_dict(state.module_state)
        except RuntimeError as err:
            self.module.load_state_dict(previous)
            raise InputError(f"{where} belongs to a different model or data set; use a new "
                             "checkpoint_dir") from err
        torch.set_rng_state(state.rng_states[0])
        self.sampler.load_state_dict(state.sampler)
        self.history = state.history
        return state

    def _steps_per_epoch(self, phase: str) -> int:
        # a step trained on cell sums passes over the features once per epoch, else over the cells
        if phase in getattr(self.module, "statistics_phases", ()):
            return max(1, self.data.n_features // self._feature_block(phase) // self.world_size)
        return self.sampler.steps_per_epoch()

    def _plan(self, i: int, history: list[dict] | None = None) -> Plan:
        phases = tuple(self.module.phases)
        history = self.history if history is None else history
        ran = sum(h["phase"] == phases[0] for h in history)  # epochs step 1 has run
        return self.mode.plan(self.config, i, len(phases), self._steps_per_epoch(phases[i]), ran,
                              self.sampler.steps_per_epoch())

    def _epoch(self, run: PhaseRun, epoch: int, plan: Plan, every: int, stopper: Stopper) -> bool:
        """Train one epoch, evaluate when due, record it; True when the phase should stop."""
        phase, n_epochs, budgeted = run.phase, plan.epochs, plan.on_training_loss
        c0 = time.process_time()
        steps = plan.last_steps if epoch == n_epochs - 1 else None
        train = self.train_epoch(run, max_steps=steps)
        train_seconds = train.pop("seconds")
        t0, c1 = time.perf_counter(), time.process_time()
        val, stop = math.nan, False
        if (epoch + 1) % every == 0 or epoch == n_epochs - 1:
            val = self.evaluate(phase)  # in budgeted pre-training for the record only
            if not budgeted:
                stop = stopper.update(val, epoch, self.module, epochs=(epoch % every) + 1)
        if budgeted:
            stop = self.mode.stops(self.config, self.history, phase, train["total"])
        eval_seconds = time.perf_counter() - t0
        # wall seconds, and this process's CPU seconds (steadier where other jobs share the machine)
        self.timings.append({"phase": phase, "epoch": epoch, "train": train_seconds, "evaluate": eval_seconds,
                             "train_cpu": c1 - c0, "evaluate_cpu": time.process_time() - c1})
        self.history.append({"phase": phase, "epoch": epoch, "val": val,
                             "seconds": train_seconds + eval_seconds, **train})
        return stop

    def fit(self, *, checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> list[dict]:
        """Train every phase; returns the per-epoch history (also kept in ``self.history``).

        An epoch's ``"val"`` is NaN where it was not evaluated (between evaluations, see
        ``eval_interval``); ``self.timings`` holds each epoch's seconds of training and of evaluation.
        """
        with self.numerics():
            return self._fit(checkpoint_dir, resume)

    def _fit(self, checkpoint_dir: str | os.PathLike | None, resume: bool) -> list[dict]:
        torch.manual_seed(self.config.seed + self.rank)  # each rank its own noise; rank 0 as when alone
        phases = list(self.module.phases)
        start = {"phase": 0, "epoch": 0}
        restored = None
        if resume:
            restored = self._restore(checkpoint_dir)
            start = restored.position
        planned = [self._plan(i).epochs for i in range(len(phases))]
        bar = tqdm(total=sum(planned), initial=sum(planned[: start["phase"]]) + start["epoch"],
                   disable=not self.progress or self.rank != 0, unit="epoch", dynamic_ncols=True)
        try:
            for i in range(start["phase"], len(phases)):
                phase = phases[i]
                plan = self._plan(i)
                n_epochs = plan.epochs
                if n_epochs != planned[i]:  # a finetune step's budget follows what step 1 ran
                    bar.total += n_epochs - planned[i]
                    bar.refresh()
                run = self.begin_phase(phase)
                optimizer = run.optimizer
                every = self.eval_interval(phase)
                stopper = Stopper(self.config.patience)
                first = 0
                # a checkpoint at a phase's end holds that phase's optimiser: start the next afresh
                if restored is not None and i == start["phase"] and start["epoch"] > 0:
                    optimizer.load_state_dict(restored.optimizer_state)
                    stopper = Stopper(self.config.patience, **restored.stopper,
                                       best_state=restored.best_state)
                    first = start["epoch"]
                    restored = None
                for epoch in range(first, n_epochs):
                    stop = self._epoch(run, epoch, plan, every, stopper)
                    h = self.history[-1]
                    if not math.isfinite(h["total"]):  # before any checkpoint: the last good one stays
                        raise TrainingDiverged(
                            f"training diverged in the {phase} step at epoch {epoch} (the loss is not finite); "
                            "nothing was written and the last checkpoint is kept: lower learning_rate or gamma")
                    bar.set_description(phase)
                    bar.set_postfix(loss=f"{h['total']:.4g}", val=f"{h['val']:.4g}", refresh=False)
                    bar.update(1)
                    last_epoch = stop or epoch == n_epochs - 1
                    if last_epoch and stopper.best_state is not None:
                        self.module.load_state_dict(stopper.best_state)  # keep the best epoch
                    if checkpoint_dir and (last_epoch or (epoch + 1) % self.config.checkpoint_every == 0):
                        nxt = {"phase": i + 1, "epoch": 0} if last_epoch else {"phase": i, "epoch": epoch + 1}
                        self._checkpoint(checkpoint_dir, optimizer, stopper, nxt)
                    if stop:
                        bar.update(n_epochs - epoch - 1)
                        break
                del run  # a DDP wrapper's gradient hooks must not outlive its phase
        finally:
            bar.close()
            self.end_training()
        return self.history
