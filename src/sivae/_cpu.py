"""Subnormal floats on the CPU: flushed to zero while a model trains.

Long CPU runs slowed down epoch after epoch: a VAE on 5,000 synthetic cells x 2,000 features went
from 1.0 s to 13.8 s per epoch by epochs 140-149 (benchmarks/long_run.py), and the 20,000-cell run
of benchmarks/run_cost.py to 125 s per epoch by epoch 74, 94% of it inside MKL's sgemm. Some values
of the training state drift into the subnormal range (below 1.2e-38), where x86 arithmetic takes a
slow microcode path. As shipped the same run keeps 1.05-1.08 s per epoch for all 150 epochs; values
that small carry no information for the model.

The flags belong to a thread: `denormals_flushed` sets them on the calling thread only, and the
intra-op threads that torch started earlier keep computing with subnormals (half of a 2-thread
product stayed subnormal here). They are weights decaying towards zero, most likely those that the
data no longer push (150,000 of one encoder layer's 524,288 weights were subnormal by epoch 130), so
`zero_subnormals` also sets such entries of the parameters and the optimiser's state to zero after
every epoch, whichever thread wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def flushing_denormals() -> bool:
    """Whether the calling thread flushes subnormal floats to zero now."""
    subnormal = torch.tensor([torch.finfo(torch.float32).tiny / 4], dtype=torch.float32)
    return bool((subnormal * 1.0).item() == 0.0)


@contextmanager
def denormals_flushed(device: torch.device | str) -> Iterator[None]:
    """Flush subnormal floats to zero on the CPU for the duration; restore the caller's setting."""
    if torch.device(device).type != "cpu":
        yield
        return
    was_on = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was_on:
            torch.set_flush_denormal(False)


@torch.no_grad()
def zero_subnormals(params: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Set the subnormal entries of ``params`` and of ``optimizer``'s state tensors to zero."""
    tensors = list(params) + [value for state in optimizer.state.values() for value in state.values()
                              if torch.is_tensor(value) and value.dim() > 0]
    for t in tensors:
        if t.is_floating_point():
            t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny, 0.0)  # zeros stay zeros
