"""The common kinds of parameters (seeds, counts, sizes, rates, fractions, devices, memory), checked
in one place for the Python API and the command line.

Each checker takes the value and the parameter's name, returns the value in its plain Python form
(a numpy integer becomes an int) and refuses anything else with one sentence: ``ParamError``, an
``InputError`` that also carries what was expected, so ``cli_type`` can turn the same checker into
an argparse ``type=`` whose message says the same thing.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

from ._errors import InputError

SEED_MAX = 2**32 - 1  # numpy's legacy seeding and torch's generators both take 32-bit seeds safely
_UNLIMITED = 2**60  # cgroup files write "no limit" as a page-rounded 2**63 - 1
T = TypeVar("T")


class ParamError(InputError):
    """A parameter of the wrong kind: ``expected`` names the kind, ``value`` what was given."""

    def __init__(self, name: str, expected: str, value: Any, hint: str = "") -> None:
        self.expected, self.value = expected, value
        super().__init__(f"{name} must be {expected}; got {value!r}{hint}")

    def __reduce__(self) -> tuple[type, tuple[str]]:  # crosses process boundaries as its sentence
        return InputError, (str(self),)


# -- numbers ---------------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum] (either end open when None); bools and 2.0 refused."""
    if minimum is not None and maximum is not None:
        expected = f"an integer from {minimum:,} to {maximum:,}"
    elif minimum == 1:
        expected = "a positive integer"
    elif minimum == 0:
        expected = "an integer >= 0"
    else:
        expected = "an integer" + (f" >= {minimum:,}" if minimum is not None else "") + (
            f" <= {maximum:,}" if maximum is not None else "")
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParamError(name, expected, value)
    return int(value)


def count(value: Any, name: str, *, maximum: int | None = None) -> int:
    """A positive integer (a number of cells, trees, steps, replicates, jobs, ...)."""
    return integer(value, name, minimum=1, maximum=maximum)


def jobs(value: Any, name: str = "n_jobs") -> int:
    """Parallel workers: a positive integer, or -1 for all cores (joblib's convention)."""
    if not is_int(value) or not (value >= 1 or value == -1):
        raise ParamError(name, "a positive integer, or -1 for all cores", value)
    return int(value)


def optional_count(value: Any, name: str) -> int | None:
    """None, or a positive integer."""
    return None if value is None else count(value, name)


def sizes(value: Any, name: str) -> tuple[int, ...]:
    """A non-empty sequence of positive integers (hidden layer widths)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ParamError(name, "a non-empty list of positive integer widths", value)
    widths = tuple(value)
    if not widths or not all(is_int(w) and w >= 1 for w in widths):
        raise ParamError(name, "a non-empty list of positive integer widths", value)
    return tuple(int(w) for w in widths)


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer from 0 to 2**32 - 1."""
    if not is_int(value) or not 0 <= value <= SEED_MAX:
        raise ParamError(name, "an integer from 0 to 2**32 - 1", value)
    return int(value)


def number(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval from ``low`` to ``high`` (ends open as asked)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    if math.isinf(low) and math.isinf(high):
        expected = "a finite number"
    elif math.isinf(high):
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        expected = f"a number in {left}{low:g}, {high:g}{right}"
    ok = isinstance(value, Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise ParamError(name, expected, value)
    return float(value)


def positive(value: Any, name: str) -> float:
    """A finite number > 0."""
    return number(value, name, low=0.0, low_open=True)


def non_negative(value: Any, name: str) -> float:
    """A finite number >= 0."""
    return number(value, name, low=0.0)


def learning_rate(value: Any, name: str = "learning_rate") -> float:
    """A step size in (0, 1]: Adam's steps and boosting's shrinkage diverge or mean nothing beyond 1."""
    return number(value, name, low=0.0, high=1.0, low_open=True)


def fraction(value: Any, name: str, *, closed_low: bool = False, closed_high: bool = True) -> float:
    """A probability or fraction in (0, 1] by default; either end closed or open as asked."""
    return number(value, name, low=0.0, high=1.0, low_open=not closed_low, high_open=not closed_high)


# -- devices ---------------------------------------------------------------------------------------
_DATA_DEVICES = ("cpu", "cuda", "mps", "xpu")  # device types that hold tensors' values


def device(value: Any, name: str = "device") -> Any:
    """A torch device that can hold data: "auto" (CUDA when present, else the CPU), "cpu", "cuda[:i]".

    Under torchrun (``WORLD_SIZE`` > 1) a bare "cuda" is GPU ``LOCAL_RANK``. "meta" and other
    devices without storage are refused: a model there has shapes but no values.
    """
    import torch

    if str(value) == "auto":
        value = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"unknown {name} {value!r}; use 'auto', 'cpu' or 'cuda'") from err
    if dev.type not in _DATA_DEVICES:
        raise InputError(f"{name} {value!r} cannot hold data (a {dev.type!r} tensor has a shape but no "
                         "values); use 'auto', 'cpu' or 'cuda'")
    if dev.type != "cpu" and not _available(torch, dev.type):
        gpu = "CUDA GPU" if dev.type == "cuda" else f"{dev.type.upper()} device"
        raise InputError(f"{name} {str(value)!r} was requested but no {gpu} is available; "
                         f"use {name}='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{name} {str(dev)!r} does not exist: this machine has {torch.cuda.device_count()} "
                         "CUDA GPUs; use 'cuda' or 'auto'")
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    return dev


def device_name(value: Any, name: str = "device") -> str:
    """The command line's --device: checked as :func:`device` checks it, kept as text (the
    command resolves it again where it runs, e.g. per torchrun process)."""
    device(value, name)
    return str(value)


def _available(torch: Any, kind: str) -> bool:
    module = getattr(torch, kind, None) if kind != "mps" else getattr(torch.backends, "mps", None)
    return bool(module is not None and module.is_available())


# -- memory ----------------------------------------------------------------------------------------
def available_memory() -> float | None:
    """Bytes this process can still allocate: the least of the machine's MemAvailable, the room
    left under its address-space limit (``ulimit -v``, RLIMIT_AS) and under its cgroup's memory
    limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None where nothing tells."""
    known = [v for v in (_mem_available(), _address_space_left(), _cgroup_left()) if v is not None]
    return float(min(known)) if known else None


def check_memory(n_bytes: float, what: str, fix: str, *, available: float | None = None) -> None:
    """Refuse, in one sentence, work that needs ``n_bytes`` when less is available.

    ``what`` names the work ("a clr network on 15,000 genes"), ``fix`` how to need less.
    ``available`` overrides :func:`available_memory` (e.g. a user's ``max_memory``).
    """
    have = available_memory() if available is None else float(available)
    if have is not None and n_bytes > have:
        raise InputError(f"{what} needs about {format_bytes(n_bytes)} of memory but {format_bytes(max(have, 0))} "
                         f"is available to this process; {fix}")


def format_bytes(n_bytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n_bytes) < 1024:
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:,.1f} PiB"


def _mem_available() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> float | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = 0.0
    try:  # what the process has mapped already counts against the limit
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                used = float(line.split()[1]) * 1024
    except OSError:
        pass
    return max(float(soft) - used, 0.0)


def _cgroup_left() -> float | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    left = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            left += _cgroup_room(Path("/sys/fs/cgroup"), path, "memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            left += _cgroup_room(Path("/sys/fs/cgroup/memory"), path, "memory.limit_in_bytes",
                                 "memory.usage_in_bytes")
    return min(left) if left else None


def _cgroup_room(root: Path, path: str, limit_file: str, usage_file: str) -> list[float]:
    # the process's cgroup and every ancestor limit it; inside a container the mount may show
    # only the cgroup's own files at the root
    room = []
    parts = [p for p in path.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        folder = root.joinpath(*parts[:depth])
        try:
            text = (folder / limit_file).read_text().strip()
        except (OSError, ValueError):
            continue
        if not text.isdigit() or int(text) >= _UNLIMITED:
            continue
        try:
            usage = float((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            usage = 0.0
        room.append(max(float(text) - usage, 0.0))
    return room


# -- the command line ------------------------------------------------------------------------------
def cli_type(check: Callable[..., T], parse: Callable[[str], Any] = int, *, name: str = "value",
             **options: Any) -> Callable[[str], T]:
    """An argparse ``type=`` from a checker: parse the text (``int`` or ``float``), then check it,
    so the command line refuses what the Python API refuses, naming the same expected kind."""

    def convert(text: str) -> T:
        try:
            value = parse(text)
        except (ValueError, OverflowError):
            expected = "an integer" if parse is int else "a number"
            try:
                check(None, name, **options)
            except ParamError as err:
                expected = err.expected
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            return check(value, name, **options)
        except ParamError as err:
            raise argparse.ArgumentTypeError(f"expected {err.expected}, got {text!r}") from None
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(check, "__name__", "value")  # argparse names the type in some errors
    return convert
