"""How a setting is declared, once: its default, type, range and help in one dataclass field.

A settings dataclass (config.ModelConfig, train_config.TrainConfig) declares each field with
`setting`; `check` then refuses a wrong type or an out-of-range value with one sentence, built
here for every setting, and the command line (cli/_settings.py) builds its options from the same
fields. Adding a setting is one field: its checks, its option and its documentation follow.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Container
from dataclasses import Field, dataclass, field, fields
from typing import Any

import numpy as np

from ._errors import InputError
from ._params import is_int


@dataclass(frozen=True)
class Interval:
    """The numbers from ``low`` to ``high``, each end included or not (NaN never)."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def describe(self, integer: bool) -> str:
        """The range in words, as the error sentence and the command line's help give it."""
        if integer and math.isinf(self.high):
            low = self.low if self.low_closed else self.low + 1
            return f"at least {low:g} (a positive integer)" if low == 1 else f"an integer >= {low:g}"
        if math.isinf(self.high):
            sign = ">=" if self.low_closed else ">"
            return f"a finite number {sign} {self.low:g}"
        high = f"2**{int(math.log2(self.high))}" if integer and self.high > 1e6 else f"{self.high:g}"
        text = f"{'[' if self.low_closed else '('}{self.low:g}, {high}{']' if self.high_closed else ')'}"
        return f"an integer in {text}" if integer else f"in {text}"


def setting(default: Any, help: str, *, range: Interval | None = None,  # noqa: A002 (dataclass vocabulary)
            choices: Container[str] | None = None, non_empty: bool = False, cli: str | None = None,
            mode: str | None = None) -> Any:
    """A dataclass field with what its checks, the command line and the documentation need.

    Parameters
    ----------
    default
        The default value (immutable: numbers, strings, tuples, None).
    help
        One line for ``--help`` and the settings' documentation.
    range
        Allowed numbers (for a tuple of integers: allowed entries).
    choices
        Allowed strings; read when checking, so a registry that grows is seen.
    non_empty
        A tuple must have at least one entry.
    cli
        The option's name on the command line, when not ``--`` + the name with dashes; "" for none.
    mode
        The training mode (train/modes.py) that reads this setting, when only one does.
    """
    metadata = {"help": help, "range": range, "choices": choices, "non_empty": non_empty, "cli": cli,
                "mode": mode}
    return field(default=default, metadata=metadata)


def same_as(cls: type, name: str) -> Any:
    """A field declared like ``cls``'s field ``name`` (default, range, help), for a second dataclass
    that must accept the same setting (a model's config saves what its trainer reads)."""
    original = next(f for f in fields(cls) if f.name == name)
    return field(default=original.default, metadata=original.metadata)


def is_number(value: Any) -> bool:
    return is_int(value) or isinstance(value, (float, np.floating))


# -- the one place each setting is checked ----------------------------------------------------------
_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}
_PLURALS = {int: "integers", float: "numbers", str: "strings"}


@dataclass(frozen=True)
class Kind:
    """What a field's annotation allows: its base type, its entries' type (a tuple's), None or not."""

    base: type  # int, float, str, bool or tuple
    optional: bool
    item: type | None = None  # a tuple's entries: tuple[int, ...] -> int

    @property
    def phrase(self) -> str:
        words = f"a list of {_PLURALS[self.item]}" if self.base is tuple else _WORDS[self.base]
        return words + (" or None" if self.optional else "")

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.base is int:
            return is_int(value)
        if self.base is float:
            return is_number(value)
        if self.base is bool:
            return isinstance(value, (bool, np.bool_))
        if self.base is tuple:
            return isinstance(value, (tuple, list)) and all(Kind(self.item, False).holds(v) for v in value)
        return isinstance(value, self.base)


def kind_of(cls: type, name: str) -> Kind:
    """The type a settings dataclass's field ``name`` takes, from its annotation."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    base = typing.get_origin(hint) or hint
    item = typing.get_args(hint)[0] if base is tuple else None
    return Kind(base=base, optional=optional, item=item)


def expected(cls: type, f: Field) -> str:
    """What field ``f`` of ``cls`` accepts, in words: the middle of its error sentence."""
    kind, meta = kind_of(cls, f.name), f.metadata
    if meta.get("choices") is not None:
        text = f"one of {tuple(meta['choices'])}"
    elif meta.get("range") is not None and kind.base is tuple:
        text = "positive integers" if meta["range"].low == 1 else f"integers {meta['range'].describe(True)}"
        text += " (one or more)" if meta.get("non_empty") else ""
    elif meta.get("range") is not None:
        text = meta["range"].describe(kind.base is int)
    else:
        return kind.phrase
    return text + (" or None" if kind.optional else "")


def check_value(cls: type, name: str, value: Any) -> None:
    """Refuse ``value`` for setting ``name`` of ``cls`` with one sentence: its type, then its range."""
    f = next(f for f in fields(cls) if f.name == name)
    kind, meta = kind_of(cls, name), f.metadata
    if not kind.holds(value):
        raise InputError(f"{name} must be {kind.phrase}, got {value!r} ({type(value).__name__})")
    if value is None:
        return
    choices, allowed = meta.get("choices"), meta.get("range")
    if choices is not None:
        ok = value in choices
    elif allowed is not None and kind.base is tuple:
        ok = all(v in allowed for v in value) and (len(value) > 0 or not meta.get("non_empty"))
    elif allowed is not None:
        ok = value in allowed
    else:
        ok = True
    if not ok:
        raise InputError(f"{name} must be {expected(cls, f)}, got {value!r}")


def check(config: Any) -> None:
    """Refuse any setting of the dataclass instance ``config`` of the wrong type or out of range."""
    for f in fields(config):
        check_value(type(config), f.name, getattr(config, f.name))


def refuse_unknown(cls: type, given: Any, where: str) -> None:
    """Refuse names in ``given`` that are no setting of ``cls``: one sentence naming them."""
    unknown = sorted(set(given) - {f.name for f in fields(cls)})
    if unknown:
        raise InputError(f"{where} got unknown arguments {unknown}; the settings are listed in "
                         f"help({cls.__module__}.{cls.__name__})")


def describe(f: Field) -> str:
    """Setting ``f``'s help, naming the training mode that alone reads it."""
    mode = f.metadata.get("mode")
    return f.metadata.get("help", "") + (f" ({mode} mode only)" if mode else "")


def document(cls: type) -> type:
    """Append each setting's default, accepted values and help to ``cls``'s docstring (numpydoc)."""
    lines = ["", "    Attributes", "    ----------"]
    for f in fields(cls):
        lines += [f"    {f.name} : {expected(cls, f)}, default {f.default!r}", f"        {describe(f)}"]
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls
