"""Started by tests/test_distributed.py under torchrun: sivae.distributed's public entry points,
from Python, as a user's script would use them (no CLI).

Each rank writes what it saw to OUT_DIR/rank<r>.json: its rank, the world size inside the
block, how often it ran the loader, and the AnnData it received.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from anndata import AnnData

from sivae.distributed import distributed_context, load_on_rank_zero, process_group


def main(out_dir: Path) -> None:
    calls = []

    def load() -> AnnData:
        calls.append(1)
        return AnnData(np.arange(12, dtype=np.float32).reshape(4, 3))

    with process_group("cpu") as rank:
        world = distributed_context()
        adata = load_on_rank_zero(load)
    after = distributed_context()
    (out_dir / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": None if world is None else world[1], "loads": len(calls),
        "X": adata.X.tolist(), "group_ended": after is None,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
