"""Run by tests/test_distributed.py, under torchrun or as one plain process: the backed pipeline
(read_backed, preprocess, SIVAE on the file, train) with the rows each stage reads counted.

Each process writes to OUT_DIR/rank<r>.npz what it computed and rows.json the rows it read per
stage (preprocessing passes, the feature-wise input's PCA, the outputs), so the test can check
that the ranks agree with each other and with one process, and that each rank read its share.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import sivae
from sivae.data import feature_input, streaming
from sivae.data.backed import BackedCellMatrix

# small chunks, so that a pass over this small file has many chunks to share out
streaming._CHUNK_VALUES = 2_000
feature_input._CHUNK_VALUES = 2_000


def _stage(reads: dict[str, int], name: str, fn):
    before = BackedCellMatrix.rows_read
    result = fn()
    reads[name] = BackedCellMatrix.rows_read - before
    return result


def main(path: Path, out_dir: Path, batch_key: str | None = None) -> None:
    torch.set_num_threads(1)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if several else 0
    try:
        reads: dict[str, int] = {}
        adata = sivae.read_backed(path)
        _stage(reads, "preprocess", lambda: sivae.pp.preprocess(adata, n_top_genes=40, progress=False,
                                                                batch_key=batch_key))
        model = _stage(reads, "feature_input", lambda: sivae.SIVAE(
            adata, n_latent=2, encoder_hidden=(16,), c_red=8, batch_size=64, seed=0, batch_key=batch_key))
        model.train(max_epochs=2, progress=False)
        _stage(reads, "outputs", model._write_outputs)  # again, counted apart from training
        keys = model.keys
        np.savez(
            out_dir / f"rank{rank}.npz",
            var_mean=adata.var["sivae_mean"].to_numpy(), var_std=adata.var["sivae_std"].to_numpy(),
            features=np.asarray(adata.var_names, dtype=str),
            library=adata.obs["sivae_library_size"].to_numpy(),
            feature_x=model.feature_x.numpy(),
            embedding=adata.obsm[keys.cell_embedding], centrality=adata.var[keys.centrality].to_numpy(),
            # the same model's outputs computed by this process alone, over all cells
            embedding_alone=model._embed(model.cells),
            centrality_alone=model.get_reconstruction_accuracy(),
        )
        (out_dir / f"rows{rank}.json").write_text(json.dumps(reads))
    finally:
        if several:
            dist.destroy_process_group()


if __name__ == "__main__":
    # a third argument: the obs column holding each cell's batch (genes chosen across batches, the
    # batch a covariate of the model)
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
