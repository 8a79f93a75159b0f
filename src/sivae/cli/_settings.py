"""Command-line options built from the settings dataclasses (sivae.settings): one per field.

An option's name, type, choices, default and help come from the field that declares the setting
(config.ModelConfig, train_config.TrainConfig), so a new setting is an option without an edit
here. Options only parse text; the range is checked where the setting is declared
(`check_given`), before any file is read, and refused with that setting's one sentence.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import Field, fields
from typing import Any

from sivae._errors import InputError
from sivae.settings import Kind, check_value, describe, kind_of


def option_name(f: Field) -> str:
    """The command-line flag of setting ``f``: its declared ``cli`` name, else --the-name."""
    return f.metadata.get("cli") or "--" + f.name.replace("_", "-")


def option_help(f: Field) -> str:
    """``f``'s help and default, as --help prints them."""
    default = f.default
    shown = (",".join(map(str, default)) or "none") if isinstance(default, tuple) else default
    return f"{describe(f)} (default {shown})".replace("%", "%%")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 64,32; got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__  # argparse names the type in its messages
    return parse_or_none


_PARSERS = {int: _integer, float: _number, str: str}


def _parser_of(kind: Kind) -> Callable[[str], Any]:
    # a tuple is written comma-separated: integers (layer widths) or names
    parse = (_widths if kind.item is int else _names) if kind.base is tuple else _PARSERS[kind.base]
    return _or_none(parse) if kind.optional else parse


def add_settings(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = ()) -> list[str]:
    """Add an option for each setting of dataclass ``cls`` (but ``skip``); the settings' names.

    An option left out leaves its setting out of the namespace (argparse.SUPPRESS), so the
    dataclass's default applies.
    """
    names = []
    for f in fields(cls):
        if f.name in skip or "help" not in f.metadata or f.metadata.get("cli") == "":
            continue
        kind = kind_of(cls, f.name)
        options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": option_help(f)}
        if kind.base is bool:
            options["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
        elif f.metadata.get("choices") is not None:
            options["choices"] = tuple(f.metadata["choices"])
        else:
            options["type"] = _parser_of(kind)
            options["metavar"] = ("W1,W2,..." if kind.item is int else "A,B,...") if kind.base is tuple else f.name.upper()
        parser.add_argument(option_name(f), **options)
        names.append(f.name)
    return names


def given(args: argparse.Namespace, cls: type, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of ``cls`` (but ``skip``) given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name not in skip}


def check_given(cls: type, values: dict[str, Any]) -> None:
    """Refuse an out-of-range setting now, before any work, with its one sentence and its flag."""
    by_name = {f.name: f for f in fields(cls)}
    for name, value in values.items():
        try:
            check_value(cls, name, value)
        except InputError as err:
            raise InputError(f"{option_name(by_name[name])}: {err}") from None
