"""Long CPU runs keep their epoch time: subnormal floats flushed (src/sivae/_cpu.py).

Before the fix, a VAE on the CPU slowed down epoch after epoch once weights had
decayed into the subnormal range (below 1.2e-38), where x86 arithmetic takes a slow path. This
trains the same VAE several times in one process, on synthetic cells with early stopping off: as
shipped; with the fix switched off (the code before it); and, with more than one thread, with the
flags set on the calling thread alone (the first fix, which left torch's other threads computing
with subnormals). It prints the seconds per epoch of each, averaged over blocks of 10 epochs, and
the ratio of the last block to the first.

    .venv/bin/python benchmarks/long_run.py --quick         # small, seconds: exercises every path
    .venv/bin/python benchmarks/long_run.py                 # 5,000 x 2,000, 150 epochs, 1 and 2 threads (~25 min)
    .venv/bin/python benchmarks/long_run.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from _common import add_arguments, as_anndata, claim, command_line, out_dir, synthetic, verdict, write_result


# each code's setting of the trainer's option (sivae.train.config.TrainConfig.subnormals)
CODES = {"before the fix": "off", "calling thread only": "zero", "as shipped": "flush"}


def run(adata: Any, epochs: int, fix: str) -> list[float]:
    """Seconds of training per epoch of one VAE run: fix "off", "zero" (flags on the calling thread,
    subnormals zeroed each epoch) or "flush" (as shipped)."""
    import sivae

    model = sivae.VAE(adata, n_latent=10, seed=0, device="cpu", patience=10**6)
    model.train(max_epochs=epochs, progress=False, subnormals=fix)
    return [float(t["train"]) for t in model.training_timings]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--cells", type=int, default=None, help="synthetic cells (default 5,000; quick 600)")
    parser.add_argument("--features", type=int, default=None, help="synthetic features (default 2,000; quick 200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each run (default 150; quick 20)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default 1 2)")
    args = parser.parse_args(argv)
    for key, quick, full in (("cells", 600, 5000), ("features", 200, 2000), ("epochs", 20, 150)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    import torch

    folder = out_dir(args)
    t0 = time.perf_counter()
    adata = as_anndata(synthetic(args.cells, args.features, seed=0))
    table = []
    for threads in args.threads:
        torch.set_num_threads(threads)  # after the data: scanpy's kernels reset the thread count
        for code, fix in CODES.items():
            if fix == "zero" and threads == 1:
                continue  # one thread: the calling thread is the only one, the same as shipped
            seconds = run(adata, args.epochs, fix)
            blocks = [float(np.mean(seconds[i:i + 10])) for i in range(0, len(seconds), 10)]
            table.append({"code": code, "threads": threads, "cells": args.cells, "features": args.features,
                          "epochs": len(seconds), "first_10_s_per_epoch": blocks[0],
                          "last_10_s_per_epoch": blocks[-1], "last_over_first": blocks[-1] / blocks[0],
                          "total_s": float(sum(seconds)), "s_per_epoch_by_10": " ".join(f"{b:.2f}" for b in blocks)})
            print(f"{threads} thread(s), {code}: seconds per epoch, each 10 epochs: {table[-1]['s_per_epoch_by_10']}",
                  flush=True)
    claims = []
    for threads in args.threads:
        rows = {r["code"]: r for r in table if r["threads"] == threads}
        shipped, before = rows["as shipped"], rows["before the fix"]
        ours = (f"as shipped {shipped['last_over_first']:.2f}x, {shipped['total_s']:.0f} s in all; before the fix "
                f"{before['last_over_first']:.2f}x, {before['total_s']:.0f} s")
        if "calling thread only" in rows:
            caller = rows["calling thread only"]
            ours += f"; flags on the calling thread only {caller['last_over_first']:.2f}x, {caller['total_s']:.0f} s"
        claims.append(claim(f"a long CPU run keeps its epoch time on {threads} thread(s) (last 10 epochs within "
                            "1.5x of the first 10)", "none (a property of the implementation)",
                            f"{ours} ({args.epochs} epochs)", verdict(shipped["last_over_first"] <= 1.5)))
    payload = {"benchmark": "long_run", "paper": "none", "command": command_line(), "quick": bool(args.quick),
               "seconds": time.perf_counter() - t0, "table": table, "claims": claims,
               "settings": {k: getattr(args, k) for k in ("cells", "features", "epochs", "threads")},
               "summary": "seconds per epoch of the same VAE run with subnormal floats flushed (as shipped) "
                          "and without (the code before the fix)."}
    print(f"wrote {write_result(payload, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
