"""The one exception type sivae raises for bad input, so the CLI can print it as one sentence."""

from __future__ import annotations


class InputError(ValueError):
    """Input that sivae refuses, with one sentence naming the problem and how to fix it."""


class TrainingDiverged(InputError):
    """Training produced non-finite values; nothing was written (the last good checkpoint is kept)."""
