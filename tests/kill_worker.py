"""Run a sivae command, or a Python snippet, and SIGKILL this process at the N-th call of a function.

    python kill_worker.py MODULE.FUNCTION N cli ARGS...     # sivae ARGS, killed at call N
    python kill_worker.py MODULE.FUNCTION N py CODE         # exec(CODE), killed at call N

The kill is a real ``kill -9`` of this process (no handler, no cleanup, no ``finally`` runs), at
the moment the named function is called for the N-th time, before it runs: the state on disk is
what a power cut or an OOM kill at that point would leave.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def _arm(target: str, n: int) -> None:
    module, name = target.rsplit(".", 1)
    owner = importlib.import_module(module)
    real, calls = getattr(owner, name), [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, name, dying)


if __name__ == "__main__":
    target, n, kind, *rest = sys.argv[1:]
    _arm(target, int(n))
    if kind == "cli":
        from sivae.cli import main

        sys.exit(main(rest))
    exec(rest[0])  # noqa: S102 - the tests' own snippets
    sys.exit(0)
