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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ._errors import InputError, TrainingDiverged
from .checkpoint import CheckpointState, load_checkpoint, save_checkpoint
from .data.loaders import BlockSampler, CellMatrix
from .module import Batch, Losses


_EVAL_FEATURE_BLOCK = 4096  # features per held-out loss evaluation step, at least


def distributed_context() -> tuple[int, int] | None:
    """This process's place in the default ``torch.distributed`` process group.

    Returns
    -------
    (rank, world_size) when a process group is initialised (e.g. by ``sivae fit`` under
    ``torchrun``), else None: a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    # on the trainer's device, which is where NCCL needs it; gloo takes CPU tensors
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


class _PhaseLoss(nn.Module):
    """module.loss as a forward(), for DistributedDataParallel, which syncs only through one."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Batch, phase: str) -> Losses:
        return self.module.loss(batch, phase)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is optimised. Epoch counts are passes over the training cells."""

    max_epochs: int = 200
    # Epoch limit of steps 1 and 2 (pre-training), each stopped early on its own; None: max_epochs,
    # so step 1 converges as a VAE trained alone would and step 2 regresses converged weights.
    # Against max_epochs // 4 on pbmc68k_reduced (K=2, 100 epochs) 15-NN accuracy moved by
    # -1.5, +0.5 and +1.8 points for seeds 0, 2 and 3: no clear gain there, but no early cut-off.
    pretrain_epochs: int | None = None
    batch_size: int = 256
    # Features scored per step; None: default_feature_batch's choice.
    feature_batch_size: int | None = None
    learning_rate: float = 1e-3
    # L2 on weights, as Adam's coupled weight decay (the gradient of l2 * ||W||^2 / 2 per step).
    l2: float = 1e-3
    patience: int = 20
    grad_clip: float = 5.0
    checkpoint_every: int = 10
    seed: int = 0

    def epochs_for(self, phase: str, last: bool) -> int:
        if last:
            return self.max_epochs
        return self.max_epochs if self.pretrain_epochs is None else self.pretrain_epochs


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

    @property
    def n_features(self) -> int:
        return self.cells.n_features


@dataclass
class _Stopper:
    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, loss: float, epoch: int, module: nn.Module) -> bool:
        """Record the epoch's held-out loss; True when training should stop."""
        if loss < self.best - 1e-4 * abs(self.best if math.isfinite(self.best) else 0.0):
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience


class Trainer:
    """Runs a module's training phases in order, each with early stopping on held-out cells.

    Inside a process group every rank must build its Trainer on the same data and module and call
    ``fit`` (and ``evaluate``) together: both run collectives.
    """

    def __init__(
        self,
        module: nn.Module,
        data: TrainingData,
        config: TrainConfig,
        *,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> None:
        self.module, self.data, self.config = module, data, config
        self.device = torch.device(device)
        self.progress = progress
        self.rank, self.world_size = distributed_context() or (0, 1)
        fbs = config.feature_batch_size or default_feature_batch(
            data.n_features, config.batch_size, feature_path=data.feature_x is not None)
        if module.config.likelihood == "nb":
            fbs = data.n_features  # the softmax of eq. 15 runs over every feature
        fbs = min(fbs, data.n_features)
        self.sampler = BlockSampler(
            data.train_idx, data.n_features, batch_size=config.batch_size,
            feature_batch_size=fbs, seed=config.seed, rank=self.rank, world_size=self.world_size,
        )
        self.history: list[dict[str, Any]] = []
        self.library = None if data.counts is None else torch.from_numpy(data.counts.row_sums())

    # -- batches --------------------------------------------------------------------------------
    def _batch(self, cell_idx: np.ndarray | None, feature_idx: np.ndarray) -> Batch:
        dev = self.device
        fidx = torch.from_numpy(np.asarray(feature_idx, dtype=np.int64)).to(dev)
        feature_x = None if self.data.feature_x is None else self.data.feature_x[fidx.cpu()].to(dev)
        x = target = library = None
        if cell_idx is not None:
            x = self.data.cells.rows(cell_idx).to(dev)
            if self.data.counts is not None:
                target = self.data.counts.rows(cell_idx)[:, fidx.cpu()].to(dev)
                library = self.library[torch.from_numpy(cell_idx)].to(dev)
            else:
                target = x if self.sampler.all_features else x[:, fidx]
        return Batch(
            x=x, target=target, feature_idx=fidx, feature_x=feature_x,
            n_cells=len(self.data.train_idx), n_features=self.data.n_features, library=library,
        )

    # -- one epoch, one evaluation ----------------------------------------------------------------
    def _train_epoch(self, phase: str, optimizer: torch.optim.Optimizer, params: list,
                     loss_fn: Callable[[Batch, str], Losses]) -> dict:
        self.module.train()
        sums: dict[str, float] = {}
        n = 0
        for cell_idx, feature_idx in self.sampler.epoch():
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
            *totals, n = _all_reduce_sum([sums[k] for k in keys] + [n], self.device)
            sums = dict(zip(keys, totals))
        return {k: v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self, phase: str) -> float:
        """Held-out loss of the phase, with a fixed noise seed so epochs compare fairly.

        In a process group each rank scores every world_size-th batch of held-out cells and the
        sums are all-reduced, so every rank returns the same loss (and stops at the same epoch).
        """
        self.module.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)
            n_features = self.data.n_features
            # Blocks only bound memory here: every feature is scored, and each block re-runs the
            # cell encoder, so take larger blocks than training does (benchmarks/train_speed.py,
            # 28k features: 67 s per evaluation in blocks of 512, 21 s in blocks of 2,048).
            fbs = max(self.sampler.feature_batch_size, _EVAL_FEATURE_BLOCK)
            blocks = [np.arange(s, min(s + fbs, n_features)) for s in range(0, n_features, fbs)]
            total, weight = 0.0, 0
            val_batches = [self.data.val_idx[s : s + self.config.batch_size]
                           for s in range(0, len(self.data.val_idx), self.config.batch_size)]
            for cells in val_batches[self.rank :: self.world_size]:
                for block in blocks:
                    # each block's loss already estimates all features: weight it by its share
                    loss = self.module.loss(self._batch(cells, block), phase).total.item()
                    total += loss * len(cells) * len(block) / n_features
                weight += len(cells)
        if self.world_size > 1:
            total, weight = _all_reduce_sum([total, weight], self.device)
        return total / max(weight, 1)

    # -- the whole run --------------------------------------------------------------------------
    def _optimizer(self, phase: str) -> tuple[torch.optim.Optimizer, list]:
        params = [p for p in self.module.phase_parameters(phase) if p.requires_grad]
        decay = [p for p in params if p.dim() == 2]  # weight matrices; biases and vectors exempt
        rest = [p for p in params if p.dim() != 2]
        groups = [
            {"params": decay, "weight_decay": 2.0 * self.config.l2},
            {"params": rest, "weight_decay": 0.0},
        ]
        return torch.optim.Adam(groups, lr=self.config.learning_rate), params

    def _train_only(self, phase: str, trainable: dict[int, bool]) -> None:
        # DDP registers the parameters that require grad when it is built: exactly this phase's
        ours = {id(p) for p in self.module.phase_parameters(phase)}
        for p in self.module.parameters():
            p.requires_grad_(trainable[id(p)] and id(p) in ours)

    def _loss_fn(self) -> Callable[[Batch, str], Losses]:
        """module.loss, or with several ranks its DDP wrapper, which averages the gradients."""
        if self.world_size == 1:
            return self.module.loss
        indexed_cuda = self.device.type == "cuda" and self.device.index is not None
        # Every parameter of a phase enters that phase's loss (tests/test_distributed.py checks
        # each module and option), so find_unused_parameters stays False.
        return DistributedDataParallel(_PhaseLoss(self.module),
                                       device_ids=[self.device.index] if indexed_cuda else None)

    def _checkpoint(self, directory, optimizer, stopper: _Stopper, position: dict) -> None:
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
                train_config=asdict(self.config), world_size=self.world_size,
                rng_states=[state.cpu() for state in rng_states], best_state=stopper.best_state,
            ))
        if self.world_size > 1:
            nccl = dist.get_backend() == "nccl" and self.device.index is not None
            dist.barrier(device_ids=[self.device.index] if nccl else None)

    def _restore(self, directory) -> CheckpointState:
        """Load a checkpoint into the module, RNG, sampler and history; checked before touching them."""
        state = load_checkpoint(directory, rank=self.rank)
        where = f"the checkpoint in {directory}"
        if state.world_size != self.world_size:
            raise InputError(f"{where} was written by {state.world_size} processes but this run has "
                             f"{self.world_size}; resume with the same number of processes")
        n_phases = len(self.module.phases)
        last = self.config.epochs_for(self.module.phases[-1], True)
        if not (state.position["phase"] < n_phases or state.position == {"phase": n_phases, "epoch": 0}) \
                or state.position["epoch"] > last:
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

    def fit(self, *, checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> list[dict]:
        """Train every phase; returns the per-epoch history (also kept in ``self.history``)."""
        torch.manual_seed(self.config.seed + self.rank)  # each rank its own noise; rank 0 as when alone
        phases = list(self.module.phases)
        start = {"phase": 0, "epoch": 0}
        restored = None
        if resume:
            restored = self._restore(checkpoint_dir)
            start = restored.position
        total = sum(self.config.epochs_for(p, i == len(phases) - 1) for i, p in enumerate(phases))
        done = sum(self.config.epochs_for(p, i == len(phases) - 1) for i, p in enumerate(phases[: start["phase"]])) + start["epoch"]
        bar = tqdm(total=total, initial=done, disable=not self.progress or self.rank != 0, unit="epoch",
                   dynamic_ncols=True)
        trainable = {id(p): p.requires_grad for p in self.module.parameters()}
        try:
            for i in range(start["phase"], len(phases)):
                phase = phases[i]
                n_epochs = self.config.epochs_for(phase, i == len(phases) - 1)
                self._train_only(phase, trainable)
                optimizer, params = self._optimizer(phase)
                loss_fn = self._loss_fn()
                stopper = _Stopper(self.config.patience)
                first = 0
                # a checkpoint at a phase's end holds that phase's optimiser: start the next afresh
                if restored is not None and i == start["phase"] and start["epoch"] > 0:
                    optimizer.load_state_dict(restored.optimizer_state)
                    stopper = _Stopper(self.config.patience, **restored.stopper,
                                       best_state=restored.best_state)
                    first = start["epoch"]
                    restored = None
                for epoch in range(first, n_epochs):
                    t0 = time.perf_counter()
                    train = self._train_epoch(phase, optimizer, params, loss_fn)
                    if not math.isfinite(train["total"]):  # before any checkpoint: the last good one stays
                        raise TrainingDiverged(
                            f"training diverged in the {phase} step at epoch {epoch} (the loss is not finite); "
                            "nothing was written and the last checkpoint is kept: lower learning_rate or gamma")
                    val = self.evaluate(phase)
                    stop = stopper.update(val, epoch, self.module)
                    self.history.append({"phase": phase, "epoch": epoch, "val": val,
                                         "seconds": time.perf_counter() - t0, **train})
                    bar.set_description(phase)
                    bar.set_postfix(loss=f"{train['total']:.4g}", val=f"{val:.4g}", refresh=False)
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
                del loss_fn  # a DDP wrapper's gradient hooks must not outlive its phase
        finally:
            bar.close()
            for p in self.module.parameters():
                p.requires_grad_(trainable[id(p)])
        return self.history
