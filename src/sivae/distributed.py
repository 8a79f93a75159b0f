"""What sivae needs from ``torch.distributed``: joining torchrun's process group
(:func:`process_group`) and reading the data once (:func:`load_on_rank_zero`), where this process
stands, each rank's share of the work, sums and gathers over ranks, and the module's loss as a
forward() for DistributedDataParallel.

Under torchrun every rank holds the same model and reads the same file; the passes over cells
that do not train (preprocessing statistics, the feature-wise input's PCA, the outputs) are split
so that each rank reads its own share of the cells and the ranks then combine their sums. Every
helper here is a no-op in a single process, so callers need no branch of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ._errors import InputError

if TYPE_CHECKING:
    from .nn.module import Batch, Losses

T = TypeVar("T")


@contextmanager
def process_group(device: str = "auto") -> Iterator[int]:
    """Join torchrun's process group when it started several processes; yields this process's rank.

    In one process (no ``WORLD_SIZE``, or 1) it does nothing and yields 0, so the same script runs
    with and without torchrun. Under torchrun it starts the default process group (NCCL on CUDA,
    each process on GPU ``LOCAL_RANK``; gloo on CPU) and ends it on leaving the block. Inside the
    block ``SIVAE(...).train()`` trains with DistributedDataParallel: every rank ends with the same
    model and the same results in its AnnData.

    Parameters
    ----------
    device
        "auto" (a GPU when present), "cpu" or "cuda": the device the model will train on.

    Yields
    ------
    int
        This process's rank (0 in a single process).

    Raises
    ------
    InputError
        When ``WORLD_SIZE`` is not a number, torch has no ``torch.distributed``, or the group
        cannot start (``WORLD_SIZE`` set without torchrun).

    Examples
    --------
    ``torchrun --nproc_per_node=2 fit.py``, with fit.py::

        import sivae
        from sivae.distributed import load_on_rank_zero, process_group

        def load():
            adata = sivae.read("counts.h5ad")
            sivae.pp.preprocess(adata)
            return adata

        with process_group("auto") as rank:
            adata = load_on_rank_zero(load)  # read and preprocessed once, sent to every rank
            model = sivae.SIVAE(adata, n_latent=10)
            model.train()
        if rank == 0:  # every rank holds the same model; one of them writes it
            model.save("model")
    """
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world_size = int(text)
    except ValueError:
        raise InputError(f"the environment variable WORLD_SIZE is {text!r}, not a number of "
                         "processes; unset it, or launch several with torchrun") from None
    if world_size <= 1:
        yield 0
        return
    if not dist.is_available():
        raise InputError(f"WORLD_SIZE is {world_size} but this torch build has no torch.distributed; "
                         "unset WORLD_SIZE to train in one process")
    # only CUDA or not matters here (the model resolves the device itself, config.resolve_device;
    # importing config here would close an import cycle through data.feature_input)
    try:
        cuda = torch.cuda.is_available() if str(device) == "auto" else torch.device(device).type == "cuda"
    except RuntimeError as err:
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from err
    if cuda:  # under torchrun, CUDA is GPU LOCAL_RANK
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    except (ValueError, RuntimeError) as err:  # e.g. WORLD_SIZE set by hand, no MASTER_ADDR
        raise InputError(f"WORLD_SIZE is {world_size} but the process group could not start "
                         f"({err}); launch with torchrun, or unset WORLD_SIZE to train in one "
                         "process") from err
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def load_on_rank_zero(load: Callable[[], T]) -> T:
    """``load()`` run once, on rank 0, and its result sent to every rank (in one process: ``load()``).

    For data that every rank holds whole in memory: reading and preprocessing them once saves
    the other ranks the work and guarantees that all train on the same values. An error in
    ``load`` is raised on every rank (see :func:`raising_together`), so none waits for a result
    that never comes. Data left on disk (``sivae.read_backed``) need no broadcast: there every
    rank opens the file and reads its share.

    Parameters
    ----------
    load
        A function of no arguments returning what the ranks need, e.g. a preprocessed AnnData
        (anything picklable).

    Returns
    -------
    What ``load`` returned on rank 0.
    """
    context = distributed_context()
    if context is None:
        return load()
    result = None
    with raising_together():
        if context[0] == 0:
            result = load()
    shared = [result]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


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


def my_share(items: Sequence[T]) -> Sequence[T]:
    """This rank's items of ``items``: every world_size-th one from its rank (all in one process)."""
    context = distributed_context()
    return items if context is None else items[context[0] :: context[1]]


def my_block(n: int) -> tuple[int, int]:
    """Bounds [start, stop) of this rank's contiguous block of ``n`` rows (the ranks' blocks, in
    rank order, tile 0..n and differ in size by at most one)."""
    rank, world = distributed_context() or (0, 1)
    return rank * n // world, (rank + 1) * n // world


def _wire(tensor: torch.Tensor) -> torch.Tensor:
    # NCCL moves CUDA tensors only; gloo takes CPU ones
    if dist.get_backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over all ranks."""
    return reduce_over_ranks(torch.tensor(values, dtype=torch.float64, device=device)).tolist()


_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


def reduce_over_ranks(values: T, op: str = "sum") -> T:
    """``values`` (a numpy array or a torch tensor) combined elementwise over all ranks with
    ``op`` ("sum", "min" or "max"); the same type, dtype and device come back."""
    if distributed_context() is None:
        return values
    tensor = torch.from_numpy(np.ascontiguousarray(values)) if isinstance(values, np.ndarray) else values
    wire = _wire(tensor.clone())
    dist.all_reduce(wire, op=getattr(dist.ReduceOp, _OPS[op]))
    if isinstance(values, np.ndarray):
        return wire.cpu().numpy()  # type: ignore[return-value]
    return wire.to(tensor.device)  # type: ignore[return-value]


def gather_blocks(block: np.ndarray, n: int) -> np.ndarray:
    """The ranks' `my_block` blocks of rows (each rank passes its own), joined in rank order into
    all ``n`` rows, on every rank."""
    context = distributed_context()
    if context is None:
        return block
    world = context[1]
    sizes = [(r + 1) * n // world - r * n // world for r in range(world)]
    padded = np.zeros((max(sizes), *block.shape[1:]), dtype=block.dtype)  # all_gather needs equal shapes
    padded[: len(block)] = block
    wire = _wire(torch.from_numpy(padded))
    parts = [torch.empty_like(wire) for _ in range(world)]
    dist.all_gather(parts, wire)
    return np.concatenate([part.cpu().numpy()[:size] for part, size in zip(parts, sizes)])


@contextmanager
def raising_together() -> Iterator[None]:
    """Run a block on every rank; an error on any rank is raised on all of them.

    A bad value that one rank meets in its share of the cells (or rank 0 alone reading the
    input) would otherwise leave the other ranks waiting at their next collective call until
    torchrun's timeout. The failing rank raises its own error; the others an InputError with
    its sentence, or a RuntimeError naming it where it was not an InputError.
    """
    context = distributed_context()
    if context is None:
        yield
        return
    failure: Exception | None = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks heard of it
        failure = err
    report = None if failure is None else (isinstance(failure, InputError), str(failure))
    reports: list[tuple[bool, str] | None] = [None] * context[1]
    dist.all_gather_object(reports, report)
    if failure is not None:
        raise failure
    first = next((r for r in reports if r is not None), None)
    if first is not None:
        is_input, message = first
        raise InputError(message) if is_input else RuntimeError(f"another process failed: {message}")


class PhaseLoss(nn.Module):
    """module.loss as a forward(), for DistributedDataParallel, which syncs only through one."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Batch, phase: str) -> Losses:
        return self.module.loss(batch, phase)


def phase_loss(module: nn.Module, device: torch.device, world_size: int) -> Callable[[Batch, str], Losses]:
    """module.loss, or with several ranks its DDP wrapper, which averages the gradients."""
    if world_size == 1:
        return module.loss
    indexed_cuda = device.type == "cuda" and device.index is not None
    # Every parameter of a phase enters that phase's loss (tests/test_distributed.py checks
    # each module and option), so find_unused_parameters stays False.
    return DistributedDataParallel(PhaseLoss(module), device_ids=[device.index] if indexed_cuda else None)
