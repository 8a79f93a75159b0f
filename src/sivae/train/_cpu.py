"""Subnormal floats on the CPU: flushed to zero while a model trains.

Long CPU runs slowed down epoch after epoch: a VAE on 5,000 synthetic cells x 2,000 features went
from 1.0 s to 13.8 s per epoch by epochs 140-149 (benchmarks/long_run.py), and the 20,000-cell run
of benchmarks/run_cost.py to 125 s per epoch by epoch 74, 94% of it inside MKL's sgemm. Some values
of the training state drift into the subnormal range (below 1.2e-38), where x86 arithmetic takes a
slow microcode path. As shipped the same run keeps 0.96-1.09 s per epoch for all 150 epochs; values
that small carry no information for the model.

The flags belong to a thread, and torch sets them on the calling thread only: the OpenMP threads
it started earlier keep computing with subnormals (half of a 2-thread product stayed subnormal
here). No library sets them on another thread, so `denormals_flushed` asks the OpenMP runtime
itself to run a function on each thread of torch's team (`GOMP_parallel`, the entry point of GNU
OpenMP, which torch's Linux wheels ship) that sets them there, checks that a parallel product now flushes, and gives
every thread its setting back afterwards. Where the runtime cannot be reached (another platform,
another threading backend) only the calling thread flushes, and `zero_subnormals` still sets the
subnormal entries of the parameters and the optimiser's state to zero after every epoch, whichever
thread wrote them. Those entries are weights decaying towards zero, most likely those that the data
no longer push (150,000 of one encoder layer's 524,288 weights were subnormal by epoch 130).
On 2 threads the same run went from 0.62 s to 6.6 s per epoch without any of this, from 0.67 s to
0.81 s with the calling thread alone flushing, and keeps 0.67-0.71 s as shipped.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

_TEAM_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_SUBNORMAL_BITS = 0x00200000  # a float32 of a quarter of the smallest normal, written as bits: a
# conversion from a Python float would itself be flushed on a thread that flushes


def _subnormals(n: int) -> torch.Tensor:
    return torch.full((n,), _SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)


def flushing_denormals() -> bool:
    """Whether the calling thread flushes subnormal floats to zero now."""
    return not bool((_subnormals(1) * 1.0).count_nonzero())


def team_flushes() -> bool:
    """Whether a product split over torch's intra-op threads flushes subnormal floats on all of them."""
    return not bool((_subnormals(1 << 20) * 1.0).count_nonzero())  # split over the threads


def _gomp_parallel() -> ctypes._CFuncPtr | None:
    try:
        run = ctypes.CDLL(None).GOMP_parallel  # the OpenMP runtime torch loaded, found by symbol
    except (AttributeError, OSError):
        return None
    run.argtypes = [_TEAM_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    run.restype = None
    return run


def _on_each_thread(setting: dict[int, bool] | bool) -> dict[int, bool] | None:
    """Set flush-to-zero on every thread of torch's OpenMP team; each thread's old setting, by thread.

    ``setting`` is one flag for all, or the dict an earlier call returned (to give each thread its
    own back). None where the OpenMP runtime cannot be reached.
    """
    run = _gomp_parallel()
    if run is None:
        return None
    before: dict[int, bool] = {}
    lock = threading.Lock()

    def body(_: int | None) -> None:  # runs once on each thread of the team, the caller's included
        me = threading.get_native_id()
        with lock:
            before[me] = flushing_denormals()
        torch.set_flush_denormal(setting if isinstance(setting, bool) else setting.get(me, False))

    callback = _TEAM_BODY(body)  # kept alive for the call
    run(callback, None, torch.get_num_threads(), 0)
    return before


SUBNORMALS = ("flush", "zero", "off")  # the trainer's choices (train_config.TrainConfig.subnormals)


@contextmanager
def subnormals_handled(device: torch.device | str, option: str) -> Iterator[None]:
    """What training does about subnormal floats on the CPU, for the duration: one of `SUBNORMALS`.

    "flush" (the fix as shipped): `denormals_flushed` with torch's OpenMP team; "zero": the
    calling thread alone flushes (the first fix; the rest of torch's threads keep subnormals);
    "off": nothing (the code before the fix). Except with "off" the trainer also applies
    `zero_subnormals` after every epoch.
    """
    if option not in SUBNORMALS:
        raise ValueError(f"subnormals must be one of {SUBNORMALS}, got {option!r}")
    if option == "off":
        yield
        return
    with denormals_flushed(device, team=option == "flush"):
        yield


@contextmanager
def denormals_flushed(device: torch.device | str, *, team: bool = True) -> Iterator[None]:
    """Flush subnormal floats to zero on the CPU for the duration, on the calling thread and (with
    ``team``) on torch's intra-op threads; restore each thread's setting afterwards."""
    if torch.device(device).type != "cpu":
        yield
        return
    was_on = flushing_denormals()
    parallel = team and torch.get_num_threads() > 1
    if parallel:  # start torch's OpenMP team first: a thread created while this one flushes inherits
        team_flushes()  # the flag, kept it after the run, and was never given its setting back
    torch.set_flush_denormal(True)
    team_was = None
    if parallel and not team_flushes():
        team_was = _on_each_thread(True)
        if team_was is not None and not team_flushes():  # another runtime answered: undo, rely on zeroing
            _on_each_thread(team_was)
            team_was = None
    try:
        yield
    finally:
        if team_was is not None:
            _on_each_thread(team_was)
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
