"""Whole-run cost of siVAE against a VAE: ``SIVAE(...).train(N)`` over ``VAE(...).train(N)`` (issue 14).

What a user times: build the model on preprocessed data, train it with the defaults (early
stopping included), write its outputs. For each data set and epoch budget N, each model runs in a
fresh process (one thread, imports and a tiny warm-up run done before the clock starts), the
models taking turns, so a busy neighbour slows every one alike. Wall and CPU seconds are both
recorded: on a shared machine CPU seconds of a one-thread process are the steadier measure.

Per run: seconds per step (cell pre-training, feature pre-training, joint; the VAE has one step)
and per part (training steps, held-out evaluation, feature input, outputs, the rest of setup),
the epochs each step ran, and on labelled data the 15-NN accuracy of the embedding (5-fold).

The current code's figures sit beside the new ones: ``--baseline COMMIT`` (default: the commit
before the change) extracts that commit's ``src/`` with ``git archive`` into a temporary folder
and runs the same measurements with it. Its trainer records no per-part seconds, so its parts
show only what the history holds.

    .venv/bin/python benchmarks/run_cost.py                 # full: pbmc3k + 20k x 2k synthetic, N = 3, 200
    .venv/bin/python benchmarks/run_cost.py --quick         # a 1-minute smoke run (synthetic, N = 3)
    .venv/bin/python benchmarks/run_cost.py --datasets pbmc3k --epochs 3 --baseline none --modes finetune

Each siVAE pre-training mode given by ``--modes`` (TrainConfig: "finetune", "paper", "budget") runs as
its own row beside the VAE of the same data and budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, add_arguments, as_anndata, claim, command_line, out_dir, synthetic, verdict, write_result

BASELINE = "429135d"  # the last commit before issue 14's changes to the trainer
N_LATENT = 10
STEPS = ("cell", "feature", "joint")
PARTS = ("train", "evaluate", "train_cpu", "evaluate_cpu", "feature_input", "outputs", "setup")


# -- the child: one model, one data set, one budget ---------------------------------------------------
def load(dataset: str, cells: int, features: int) -> Any:
    import sivae

    if dataset == "pbmc3k":
        adata = sivae.datasets.pbmc3k()
        sivae.pp.preprocess(adata, n_top_genes=2000, progress=False)
        return adata
    if dataset == "pbmc68k_reduced":
        return sivae.datasets.pbmc68k_reduced()
    return as_anndata(synthetic(cells, features, seed=0))


def child(spec: dict) -> dict:
    """Build, train and write one model; every figure of one row of the table."""
    import numpy as np
    import torch

    import sivae
    from sivae import KEYS
    from sivae.tl.metrics import knn_accuracy

    adata = load(spec["dataset"], spec["cells"], spec["features"])
    # after loading: scanpy's numba kernels reset the OpenMP pool to every core, and two threads
    # on a machine whose other core is busy spin against each other (8x slower epochs here)
    torch.set_num_threads(1)
    cls = getattr(sivae, spec["model"])
    options = dict(n_latent=N_LATENT, seed=spec["seed"], device="cpu")
    warm = as_anndata(synthetic(300, 50, seed=1))  # imports and allocator warmed outside the clock
    cls(warm, **{**options, **({"c_red": 20} if spec["model"] == "SIVAE" else {})}).train(1, progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    model = cls(adata, **options)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    mode = {"pretraining": spec["pretraining"]} if spec.get("pretraining") else {}
    model.train(max_epochs=spec["epochs"], progress=False, **mode)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    train_call = time.perf_counter() - t1
    feature_input = float("nan")
    if spec["model"] == "SIVAE":  # timed again on its own: the same work the constructor did
        feature_input = feature_input_seconds(model)
    history = model.history
    timings = getattr(model, "training_timings", None)

    def total(key: str, phase: str | None = None) -> float:
        if timings is None or (timings and key not in timings[0]):
            return float("nan")
        return sum(t[key] for t in timings if phase is None or t["phase"] == phase)

    steps = {s: {"epochs": sum(h["phase"] == s for h in history),
                 "seconds": sum(h["seconds"] for h in history if h["phase"] == s)} for s in STEPS}
    for s in STEPS:
        steps[s]["cpu"] = total("train_cpu", s) + total("evaluate_cpu", s)

    parts = {
        "train": total("train"), "evaluate": total("evaluate"),
        "train_cpu": total("train_cpu"), "evaluate_cpu": total("evaluate_cpu"),
        "feature_input": feature_input,
        "outputs": getattr(model, "output_seconds", train_call - getattr(model, "training_seconds", train_call)),
        "setup": setup - (0.0 if np.isnan(feature_input) else feature_input),
    }
    accuracy = float("nan")
    labels = KEYS.CELL_TYPE
    if labels in adata.obs:
        accuracy = knn_accuracy(adata.obsm[model.keys.cell_embedding], adata.obs[labels], k=15)
    return {"wall": wall, "cpu": cpu, "steps": steps, "parts": parts, "accuracy": accuracy,
            "n_cells": adata.n_obs, "n_features": adata.n_vars}


def feature_input_seconds(model: Any) -> float:
    """Seconds of the model's feature input (PCA of X^T over the training cells: this script's
    models take no cell-type labels), computed again by the public function the constructor calls."""
    import inspect

    from sivae.data.feature_input import feature_input

    c = model.config
    # the code before issue 14 (--baseline) subsampled the cells in the model, not in feature_input
    cap = {"max_cells": c.feature_input_cells} if "max_cells" in inspect.signature(feature_input).parameters else {}
    t0 = time.perf_counter()
    feature_input(model.cells, model.train_idx, method=c.feature_input, c_red=c.c_red, seed=c.seed, **cap)
    return time.perf_counter() - t0


# -- the parent: runs in turns, the table ------------------------------------------------------------
def extract(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` (git archive: reads the repository, changes nothing)."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_child(spec: dict, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(spec: dict, code: str, result: dict) -> dict:
    out = {"dataset": spec["dataset"], "n_cells": result["n_cells"], "n_features": result["n_features"],
           "max_epochs": spec["epochs"], "model": spec["model"], "pretraining": spec.get("pretraining") or "-",
           "code": code, "seed": spec["seed"],
           "wall_s": result["wall"], "cpu_s": result["cpu"]}
    for s in STEPS:
        out[f"{s}_epochs"] = result["steps"][s]["epochs"]
        out[f"{s}_s"] = result["steps"][s]["seconds"]
        out[f"{s}_cpu_s"] = result["steps"][s]["cpu"]
    for p in PARTS:
        out[f"{p}_s"] = result["parts"][p]
    out["knn15_accuracy"] = result["accuracy"]
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def add_ratios(table: list[dict]) -> None:
    """Each row's wall and CPU seconds over those of the VAE of the same data, budget and code."""
    for r in table:
        vae = next((v for v in table if v["model"] == "VAE" and all(
            v[k] == r[k] for k in ("dataset", "max_epochs", "code", "seed"))), None)
        r["wall_ratio"] = r["wall_s"] / vae["wall_s"] if vae else None
        r["cpu_ratio"] = r["cpu_s"] / vae["cpu_s"] if vae else None


GRID_EPOCHS = (3, 200)  # issue 14's cost grid; other N (the accuracy seeds) are reported beside it


def claims(table: list[dict]) -> list[dict]:
    import numpy as np

    si = [r for r in table if r["model"] == "SIVAE" and r["code"] == "new" and r["cpu_ratio"] is not None]
    if not si:
        return []
    out = []
    for mode in dict.fromkeys(r["pretraining"] for r in si):
        points: dict[tuple[str, int], list[dict]] = {}
        for r in si:
            if r["pretraining"] == mode:
                points.setdefault((r["dataset"], r["max_epochs"]), []).append(r)

        def figure(key: tuple[str, int]) -> str:
            cpu = np.array([r["cpu_ratio"] for r in points[key]])
            spread = f" (range {cpu.min():.2f}-{cpu.max():.2f}, {len(cpu)} seeds)" if len(cpu) > 1 else ""
            return f"{key[0]} N={key[1]}: {cpu.mean():.2f} CPU{spread}"

        grid = [key for key in points if key[1] in GRID_EPOCHS] or list(points)
        others = [key for key in points if key not in grid]
        worst = max(np.mean([r["cpu_ratio"] for r in points[key]]) for key in grid)
        old = [r for r in table if r["model"] == "SIVAE" and r["code"] != "new" and r["cpu_ratio"] is not None]
        before = "; ".join(f"{r['dataset']} N={r['max_epochs']}: {r['cpu_ratio']:.2f} CPU" for r in old)
        text = "siVAE/VAE " + "; ".join(map(figure, grid))
        if others:
            text += "; outside the grid: " + "; ".join(map(figure, others))
        out.append(claim(f"siVAE trains in time comparable to a VAE (whole run, early stopping, pretraining={mode!r}, "
                         f"at most 1.5x at N in {GRID_EPOCHS})", "comparable training time to a standard VAE",
                         text + (f" (code before issue 14: {before})" if before else ""), verdict(worst <= 1.5)))
    return out + accuracy_claims(table)


def accuracy_claims(table: list[dict]) -> list[dict]:
    """Per data set and siVAE mode: mean and spread over seeds of 15-NN accuracy against the VAE's."""
    import numpy as np

    out = []
    labelled = [r for r in table if r["code"] == "new" and r["knn15_accuracy"] is not None]
    for dataset, epochs in dict.fromkeys((r["dataset"], r["max_epochs"]) for r in labelled):
        rows = [r for r in labelled if r["dataset"] == dataset and r["max_epochs"] == epochs]
        vae = np.array([r["knn15_accuracy"] for r in rows if r["model"] == "VAE"])
        for mode in dict.fromkeys(r["pretraining"] for r in rows if r["model"] == "SIVAE"):
            si = np.array([r["knn15_accuracy"] for r in rows if r["model"] == "SIVAE" and r["pretraining"] == mode])
            gap = si.mean() - vae.mean()
            out.append(claim(f"siVAE embeds cells as well as a VAE ({dataset}, K={N_LATENT}, N={epochs}, "
                             f"pretraining={mode!r}, {len(si)} seeds)", "cell embedding comparable to a VAE's",
                             f"15-NN accuracy siVAE {si.mean():.4f} +/- {si.std():.4f}, VAE {vae.mean():.4f} "
                             f"+/- {vae.std():.4f} (mean +/- sd over seeds): {100 * gap:+.2f} points",
                             verdict(gap >= -0.005)))
    return out


def text_table(table: list[dict]) -> str:
    def num(value: float | None, width: int, digits: int = 1) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    head = (f"{'dataset':<11}{'N':>4} {'model':<6}{'mode':<9}{'code':<8}{'wall s':>7}{'cpu s':>7}{'wall x':>7}{'cpu x':>6}"
            f"{'cell':>12}{'feature':>12}{'joint':>12}{'train':>7}{'eval':>6}{'f.in':>6}{'out':>6}{'acc':>6}")
    lines = [head, "-" * len(head)]
    for r in table:
        vae = r["model"] == "VAE"
        steps = "".join(f"{r[f'{s}_epochs']:>4d}/" + num(r[f"{s}_cpu_s"] if r[f"{s}_cpu_s"] is not None
                                                          else r[f"{s}_s"], 6) + "s" for s in STEPS)
        lines.append(
            f"{r['dataset'][:10]:<11}{r['max_epochs']:>4d} {r['model']:<6}{r['pretraining']:<9}{r['code']:<8}{num(r['wall_s'], 7)}"
            f"{num(r['cpu_s'], 7)}{num(None if vae else r['wall_ratio'], 7, 2)}{num(None if vae else r['cpu_ratio'], 6, 2)}"
            f"{steps}{num(r['train_cpu_s'], 7)}{num(r['evaluate_cpu_s'], 6)}{num(r['feature_input_s'], 6)}"
            f"{num(r['outputs_s'], 6)}{num(r['knn15_accuracy'], 6, 3)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--datasets", nargs="+", default=None, help="pbmc3k, pbmc68k_reduced, synthetic")
    p.add_argument("--epochs", nargs="+", type=int, default=None, help="max_epochs values (default 3 200)")
    p.add_argument("--cells", type=int, default=None, help="synthetic cells (default 20,000; quick 1,500)")
    p.add_argument("--features", type=int, default=None, help="synthetic features (default 2,000; quick 300)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--modes", nargs="+", default=None, help="siVAE pretraining modes to run (default: finetune "
                                                            "paper; quick: finetune); the baseline runs its default")
    p.add_argument("--baseline", default=None, help=f"commit of the current code to compare (default {BASELINE}; "
                                                    "'none' to skip; skipped by default with --quick)")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="write one JSON from earlier runs' JSON files (their tables joined)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.datasets = args.datasets or (["synthetic"] if args.quick else ["pbmc3k", "synthetic"])
    args.epochs = args.epochs or ([3] if args.quick else [3, 200])
    args.cells = args.cells or (1_500 if args.quick else 20_000)
    args.features = args.features or (300 if args.quick else 2_000)
    args.baseline = args.baseline or ("none" if args.quick else BASELINE)
    args.modes = args.modes or (["finetune"] if args.quick else ["finetune", "paper"])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.merge:
        merge(args.merge, out_dir(args))
        return
    t_start = time.perf_counter()
    folder = out_dir(args)
    codes = {"new": ROOT / "src"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline != "none":
            codes[f"{args.baseline}"] = extract(args.baseline, Path(tmp))
        table = []
        for dataset in args.datasets:
            for epochs in args.epochs:
                for seed in args.seeds:
                    for code, src in codes.items():
                        modes = args.modes if code == "new" else [None]
                        runs = [("VAE", None)] + [("SIVAE", mode) for mode in modes]
                        for model, mode in runs:  # in turns, so load hits all alike
                            spec = {"dataset": dataset, "epochs": epochs, "model": model, "seed": seed,
                                    "cells": args.cells, "features": args.features, "pretraining": mode}
                            result = run_child(spec, src)
                            table.append(row(spec, code, result))
                            print(f"{dataset} N={epochs} {model} {mode or ''} ({code}): {result['wall']:.1f} s wall, "
                                  f"{result['cpu']:.1f} s CPU", flush=True)
    add_ratios(table)
    text = text_table(table)
    print("\n" + text)
    print("wall x, cpu x: seconds over the VAE's (same data, budget, code); cell/feature/joint: epochs/"
          "CPU seconds of each step (wall seconds for code without CPU timings); train, eval: CPU "
          "seconds of training steps and of held-out evaluation; f.in: feature input (PCA), out: "
          "writing outputs (wall s); acc: 15-NN accuracy (5-fold) where labelled")
    payload = {
        "benchmark": "run_cost", "paper": "none", "command": command_line(),
        "quick": args.quick, "seconds": time.perf_counter() - t_start, "table": table,
        "claims": claims(table), "table_text": text, "load_average": os.getloadavg(),
        "settings": {"n_latent": N_LATENT, "threads": 1, "baseline": args.baseline,
                     "synthetic": [args.cells, args.features]},
    }
    path = write_result(payload, folder)
    print(f"wrote {path} ({payload['seconds']:.0f} s in all)")


def merge(paths: list[Path], folder: Path) -> None:
    """One JSON from several runs (e.g. the cost grid and the seeds of the accuracy check)."""
    runs = [json.loads(p.read_text()) for p in paths]
    table = [r for run in runs for r in run["table"]]
    text = text_table(table)
    print(text)
    payload = {
        "benchmark": "run_cost", "paper": "none",
        "command": " && ".join([run["command"] for run in runs] + [command_line()]),
        "quick": any(run["quick"] for run in runs), "seconds": sum(run["seconds"] for run in runs),
        "table": table, "claims": claims(table), "table_text": text,
        "settings": {"merged": [run["settings"] for run in runs]},
    }
    print(f"wrote {write_result(payload, folder)}")


if __name__ == "__main__":
    main()
