"""Backed (out-of-core) siVAE at atlas scale: peak memory and time as cells, features and K grow.

Every measurement runs in a fresh child process on a sparse count file written by
``sivae simulate-large`` (kept in --data between runs), and goes through the package's own path:
``sivae.read_backed`` -> ``sivae.pp.preprocess`` (two passes over the file, all non-constant
features kept) -> ``sivae.SIVAE`` (feature input: streamed PCA of X^T over at most 50,000 cells) ->
training steps that read random cells of the whole file. The child reports its peak resident
memory (ru_maxrss, which leaves out the page cache) and the seconds of each stage.

Training throughput: each of siVAE's three steps (cell, feature, joint) runs one epoch over
``--measure-cells`` cells drawn uniformly from the whole file (after a warm-up epoch on 512 other
cells), and the held-out loss is timed separately on 256 cells; both are reported per 10,000
cells. A full epoch of a step = (training seconds per 10k cells) x (training cells / 10k) + (held-out
seconds per 10k cells) x (held-out cells / 10k).

Baseline, same script: the smallest cell count also trains from memory (the same file read whole
into RAM and preprocessed by scanpy), and every backed figure is printed as a ratio against it.

    python benchmarks/scale.py --quick           # ~1 min: 5k/20k cells x 2k features
    python benchmarks/scale.py                   # the issue's grid, ~1 h on 2 CPU cores, 40 GB disk
    python benchmarks/scale.py --device cuda     # the same on a GPU (into results/cuda/)

The JSON keeps benchmarks/README.md's contract: one table row per run, claims about memory and speed
as cells grow. ``--restate OLD.json`` adds those fields to a JSON an earlier version of this script
wrote (the measurements are kept as they are; nothing is re-run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, claim, command_line, verdict, write_result

ENCODER = (1024, 512, 128)
BATCH = 256
GRID = {
    "cells": {"n_cells": [50_000, 200_000, 1_000_000], "n_features": 28_000},
    "features": {"n_cells": 8_000, "n_features": [28_000, 120_000, 240_000]},
    "latent": {"n_cells": 50_000, "n_features": 28_000, "n_latent": [20, 128, 512]},
}
QUICK = {
    "cells": {"n_cells": [5_000, 20_000], "n_features": 2_000},
    "features": {"n_cells": 2_000, "n_features": [2_000, 8_000]},
    "latent": {"n_cells": 5_000, "n_features": 2_000, "n_latent": [20, 128]},
}
ATLAS = (1_300_000, 28_000)  # the paper's brain atlas, cells x genes


# -- the child: one measurement in a fresh process ---------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(path: str, *, n_latent: int, measure_cells: int, device: str, in_memory: bool) -> dict[str, Any]:
    import anndata as ad
    import torch

    import sivae
    from sivae.train.trainer import TrainConfig, Trainer, TrainingData

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if in_memory:
        adata = ad.read_h5ad(path)
        sivae.pp.preprocess(adata, n_top_genes=None)
    else:
        adata = sivae.read_backed(path)
        sivae.pp.preprocess(adata, n_top_genes=None, progress=False)
    out["preprocess_s"] = time.perf_counter() - t0
    out["rss_after_preprocess_mb"] = peak_rss_mb()
    t0 = time.perf_counter()
    model = sivae.SIVAE(adata, n_latent=n_latent, encoder_hidden=ENCODER, batch_size=BATCH, device=device)
    out["feature_input_s"] = time.perf_counter() - t0
    out["n_cells"], out["n_features"] = adata.n_obs, adata.n_vars

    rng = np.random.default_rng(0)
    order = rng.permutation(model.train_idx)
    warm, timed = np.sort(order[:512]), np.sort(order[512 : 512 + measure_cells])
    val = np.sort(model.val_idx[:256])
    config = TrainConfig(max_epochs=1, pretrain_epochs=1, batch_size=BATCH,
                         feature_batch_size=None, seed=0)  # the trainer picks default_feature_batch

    def run(cells: np.ndarray) -> Trainer:
        data = TrainingData(cells=model.cells, train_idx=cells, val_idx=val, feature_x=model.feature_x)
        trainer = Trainer(model.module, data, config, device=model.device, progress=False)
        trainer.fit()
        return trainer

    run(warm)
    trainer = run(timed)
    for entry in trainer.history:
        phase = entry["phase"]
        t0 = time.perf_counter()
        trainer.evaluate(phase)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        evaluate = time.perf_counter() - t0
        out[f"{phase}_train_s_per_10k"] = (entry["seconds"] - evaluate) / len(timed) * 1e4
        out[f"{phase}_heldout_s_per_10k"] = evaluate / len(val) * 1e4
    out["peak_rss_mb"] = peak_rss_mb()
    if model.device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# -- the parent: data, children, tables ----------------------------------------------------------------
def dataset(folder: Path, n_cells: int, n_features: int, density: float) -> Path:
    from sivae.data.simulate import simulate_large

    path = folder / f"sim_{n_cells}x{n_features}_d{density}.h5ad"
    if not path.exists():
        t0 = time.perf_counter()
        simulate_large(path, n_cells, n_features, density=density, progress=False)
        print(f"  wrote {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return path


def child(path: Path, args: argparse.Namespace, *, n_latent: int = 20, in_memory: bool = False) -> dict[str, Any]:
    spec = {"path": str(path), "n_latent": n_latent, "measure_cells": args.measure_cells,
            "device": args.device, "in_memory": in_memory}
    run = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"measurement failed for {spec}:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result.update(n_latent=n_latent, in_memory=in_memory)
    return result


def epoch_seconds(r: dict[str, Any], n_cells: int, holdout: float = 0.1) -> dict[str, float]:
    """Projected seconds of one full epoch of each step on ``n_cells`` cells."""
    train, held = n_cells * (1 - holdout) / 1e4, n_cells * holdout / 1e4
    return {phase: r[f"{phase}_train_s_per_10k"] * train + r[f"{phase}_heldout_s_per_10k"] * held
            for phase in ("cell", "feature", "joint")}


def row(label: str, r: dict[str, Any], base: dict[str, Any]) -> str:
    joint = r["joint_train_s_per_10k"]
    return (f"{label:>22} | {r['peak_rss_mb']:>9,.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} | "
            f"{r['preprocess_s']:>8.1f} {r['feature_input_s']:>8.1f} | "
            f"{r['cell_train_s_per_10k']:>7.1f} {r['feature_train_s_per_10k']:>7.1f} {joint:>7.1f} "
            f"{joint / base['joint_train_s_per_10k']:>6.2f} | {r['joint_heldout_s_per_10k']:>7.1f}")


def out_folder(args: argparse.Namespace) -> Path:
    if args.out is not None:
        folder = args.out
    elif args.quick:
        folder = RESULTS / "quick"
    else:
        folder = RESULTS if args.device == "cpu" else RESULTS / args.device
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    cells = results.get("cells", {})
    runs = [cells["base_in_memory"]] if cells else []
    return runs + [r for part in ("cells", "features", "latent") for r in results.get(part, {}).get("backed", [])]


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per measured run; ratios against the first run of its grid (cells: in memory)."""
    rows = []
    for part in ("cells", "features", "latent"):
        if part not in results:
            continue
        runs = results[part]["backed"]
        base = results[part]["base_in_memory"] if part == "cells" else runs[0]
        for r in ([base] if part == "cells" else []) + runs:
            rows.append({
                "grid": part, "n_cells": r["n_cells"], "n_features": r["n_features"], "n_latent": r["n_latent"],
                "backed": not r["in_memory"], "peak_rss_mb": r["peak_rss_mb"],
                "memory_ratio": r["peak_rss_mb"] / base["peak_rss_mb"], "preprocess_s": r["preprocess_s"],
                "feature_input_s": r["feature_input_s"], "cell_s_per_10k": r["cell_train_s_per_10k"],
                "feature_s_per_10k": r["feature_train_s_per_10k"], "joint_s_per_10k": r["joint_train_s_per_10k"],
                "joint_ratio": r["joint_train_s_per_10k"] / base["joint_train_s_per_10k"],
                "heldout_s_per_10k": r["joint_heldout_s_per_10k"]})
    return rows


def claims(results: dict[str, Any]) -> list[dict[str, str]]:
    """What the cells grid shows: backed memory stays flat, and reading from disk costs little speed."""
    if "cells" not in results:
        return []
    cells = results["cells"]
    base, first, last = cells["base_in_memory"], cells["backed"][0], cells["backed"][-1]
    paper = "Fig. 3d: trained on all 1.3M cells x 28k genes (one GPU, 32 GB RAM); no memory figures"
    growth = last["peak_rss_mb"] / first["peak_rss_mb"]
    slow = last["joint_train_s_per_10k"] / base["joint_train_s_per_10k"]
    hours = ", ".join(f"{k} {v:.2f} h" for k, v in cells["atlas_epoch_hours"].items())
    return [
        claim("backed training memory stays flat as cells grow (peak within 1.25x from the smallest to the "
              "largest file)", paper,
              f"peak RSS {first['peak_rss_mb']:,.0f} MB at {first['n_cells']:,} cells, "
              f"{last['peak_rss_mb']:,.0f} MB at {last['n_cells']:,} ({growth:.2f}x; "
              f"{cells['rss_bytes_per_cell']:.0f} bytes per extra cell) x {last['n_features']:,} features; "
              f"the same {base['n_cells']:,} cells in memory: {base['peak_rss_mb']:,.0f} MB",
              verdict(growth <= 1.25)),
        claim("training from the file keeps the in-memory speed (joint step within 1.5x per cell)", paper,
              f"joint step {last['joint_train_s_per_10k']:.1f} s per 10k cells at {last['n_cells']:,} cells "
              f"backed vs {base['joint_train_s_per_10k']:.1f} s in memory at {base['n_cells']:,} ({slow:.2f}x); "
              f"projected epoch on the 1.3M x 28k atlas on this CPU: {hours}",
              verdict(slow <= 1.5)),
    ]


def contract(results: dict[str, Any], *, quick: bool, seconds: float, command: str, note: str | None = None) -> None:
    """Add benchmarks/README.md's fields to ``results`` in place."""
    results.update(benchmark="scale", paper="Fig. 3d (the 1.3M-cell atlas); memory and speed are ours",
                   command=command, quick=quick, seconds=seconds, table=table_rows(results),
                   claims=claims(results))
    if note:
        results["seconds_note"] = note


HEADER = (f"{'':>22} | {'peak MB':>9} {'ratio':>6} | {'prep s':>8} {'featin s':>8} | "
          f"{'cell':>7} {'feature':>7} {'joint':>7} {'ratio':>6} | {'held':>7}\n"
          f"{'':>22} | {'(RSS)':>9} {'':>6} | {'':>8} {'':>8} | "
          f"{'train s per 10k cells':>23} {'':>6} | {'s/10k':>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, a few minutes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data", type=Path, default=None,
                        help="where the count files go, kept for the next run (default benchmarks/.data; with "
                             "--quick a temporary folder, removed at the end)")
    parser.add_argument("--density", type=float, default=0.03, help="fraction of non-zero counts")
    parser.add_argument("--measure-cells", type=int, default=2_560, help="cells per timed epoch")
    parser.add_argument("--parts", default="cells,features,latent", help="which grids to run")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for scale.json (default benchmarks/results/, results/quick/ with --quick, "
                             "results/<device>/ off the CPU)")
    parser.add_argument("--restate", type=Path, default=None, metavar="OLD_JSON",
                        help="measure nothing: add the contract's fields to a JSON of an earlier version")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    if args.restate:
        old = json.loads(args.restate.read_text())
        stages = sum(r.get("preprocess_s", 0) + r.get("feature_input_s", 0) for r in _runs(old))
        contract(old, quick=False, seconds=stages, command=".venv/bin/python benchmarks/scale.py",
                 note="wall time not recorded by that run: the sum of its preprocessing and feature-input "
                      "stages, a lower bound")
        print(f"wrote {write_result(old, out_folder(args))}")
        return

    if args.data is None and args.quick:
        with tempfile.TemporaryDirectory(prefix="sivae-scale-") as folder:  # ~20 MB, not worth keeping
            args.data = Path(folder)
            run_grids(args)
        return
    args.data = args.data or Path("benchmarks/.data")
    run_grids(args)


def run_grids(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    grid = QUICK if args.quick else GRID
    args.data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "device": args.device}, "density": args.density,
                               "measure_cells": args.measure_cells, "batch_size": BATCH,
                               "encoder": list(ENCODER)}
    parts = args.parts.split(",")
    base = None
    if "cells" in parts:
        g = grid["cells"]
        print(f"\n== cells at {g['n_features']:,} features (backed; ratios against the in-memory run "
              f"at {g['n_cells'][0]:,} cells) ==", flush=True)
        paths = [dataset(args.data, n, g["n_features"], args.density) for n in g["n_cells"]]
        base = child(paths[0], args, in_memory=True)
        runs = [child(p, args) for p in paths]
        print(HEADER)
        print(row(f"in memory {g['n_cells'][0]:,}", base, base))
        for n, r in zip(g["n_cells"], runs):
            print(row(f"backed {n:,}", r, base))
        slope = (runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]) * 2**20 / (g["n_cells"][-1] - g["n_cells"][0])
        print(f"peak memory grows by {slope:,.0f} bytes per cell (backed); "
              f"preprocessing {1e4 * runs[-1]['preprocess_s'] / g['n_cells'][-1]:.2f} s per 10k cells")
        atlas = epoch_seconds(runs[-1], ATLAS[0])
        print("projected epoch on 1.3M cells x 28k genes (scaled from the largest run): "
              + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in atlas.items()))
        results["cells"] = {"base_in_memory": base, "backed": runs, "rss_bytes_per_cell": slope,
                            "atlas_epoch_hours": {k: v / 3600 for k, v in atlas.items()}}
    if "features" in parts:
        g = grid["features"]
        print(f"\n== features at {g['n_cells']:,} cells (backed; ratios against the first) ==", flush=True)
        runs = [child(dataset(args.data, g["n_cells"], f, args.density), args) for f in g["n_features"]]
        print(HEADER)
        for f, r in zip(g["n_features"], runs):
            print(row(f"backed {f:,} features", r, runs[0]))
        per = (runs[-1]["joint_train_s_per_10k"] - runs[0]["joint_train_s_per_10k"]) / (
            (g["n_features"][-1] - g["n_features"][0]) / 1e4)
        print(f"joint step: +{per:.2f} s per 10k cells for every 10k features")
        results["features"] = {"backed": runs, "joint_s_per_10k_cells_per_10k_features": per}
    if "latent" in parts:
        g = grid["latent"]
        print(f"\n== embedding size at {g['n_cells']:,} cells x {g['n_features']:,} features (backed) ==",
              flush=True)
        path = dataset(args.data, g["n_cells"], g["n_features"], args.density)
        runs = [child(path, args, n_latent=k) for k in g["n_latent"]]
        print(HEADER)
        for k, r in zip(g["n_latent"], runs):
            print(row(f"backed K={k}", r, runs[0]))
        per = (runs[-1]["joint_train_s_per_10k"] - runs[0]["joint_train_s_per_10k"]) / (
            g["n_latent"][-1] - g["n_latent"][0])
        print(f"joint step: {per * 1e3:+.1f} ms per 10k cells for every embedding dimension")
        results["latent"] = {"backed": runs, "joint_s_per_10k_cells_per_dim": per}
    contract(results, quick=args.quick, seconds=time.perf_counter() - t_start, command=command_line())
    print(f"\nwrote {write_result(results, out_folder(args))}")

if __name__ == "__main__":
    main()
