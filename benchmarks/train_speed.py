"""Training speed of siVAE against a VAE with the same cell-wise network (DESIGN.md, "Scale").

One process: measure this machine's fp32 matmul rate, build z-scored synthetic data with planted
low-rank structure (20,000 cells x 2,000 and x 28,000 features), then time training steps of
``sivae.SIVAE`` (joint phase, step 3: the steady-state cost) and ``sivae.VAE`` through the package's
own ``Trainer.train_epoch`` (batch assembly, forward, backward, gradient clipping, Adam), the
method ``Trainer.fit`` runs each epoch through.

What is timed: each model trains on a random subset of ``--steps`` x batch_size training cells, so
one pass of ``train_epoch`` is exactly ``--steps`` steps. The first pass is a discarded warm-up;
the next ``--repeats`` passes are timed, the models taking turns, and the fastest pass counts
(other processes on a shared machine only ever add time; the median is kept in the JSON too).
Seconds per epoch = (seconds per cell) x (training cells), i.e. the timed steps scaled to a full
epoch. The held-out evaluation that ``Trainer.fit`` adds to each
epoch (and counts in the history's "seconds") is timed once, separately, on the full held-out set.

FLOPs per step are counted analytically from the layer shapes: 2*m*n*k per matmul forward, twice
that backward (weight and input gradients), except the first layer of each encoder, whose input
needs no gradient (weight gradient only, as autograd does).

    python benchmarks/train_speed.py            # full run, ~10-15 min on 2 CPU cores
    python benchmarks/train_speed.py --quick    # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anndata import AnnData

import sivae
from sivae.data.loaders import CellMatrix
from sivae.train.trainer import TrainConfig, Trainer, TrainingData, default_feature_batch

from _common import RESULTS, as_anndata, claim, command_line, synthetic, verdict, write_result

ENCODER = (1024, 512, 128)
DECODER = (128, 512, 1024)
N_LATENT = 20
BATCH = 256
C_RED = 100


# -- the machine ----------------------------------------------------------------------------------
def matmul_rate(m: int, k: int, n: int, seconds: float) -> float:
    """fp32 GFLOP/s of repeated (m, k) @ (k, n) products, after a short warm-up."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2.0 * m * k * n * count / (time.perf_counter() - t0) / 1e9


MATMUL_SHAPES = {"2048x2048@2048x2048": (2048, 2048, 2048), f"{BATCH}x2000@2000x1024": (BATCH, 2000, 1024)}


def matmul_rates(seconds: float) -> dict[str, float]:
    return {name: matmul_rate(*shape, seconds) for name, shape in MATMUL_SHAPES.items()}


def fmt_rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())


# -- FLOPs of one training step -------------------------------------------------------------------
def _mlp(rows: int, sizes: tuple[int, ...], *, input_grad: bool) -> tuple[float, float]:
    # forward and backward FLOPs of a stack of Linear layers through ``sizes``
    layers = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2.0 * rows * a * b for a, b in layers)
    bwd = 2.0 * fwd if input_grad else 2.0 * fwd - 2.0 * rows * layers[0][0] * layers[0][1]
    return fwd, bwd


def _encoder(rows: int, n_in: int) -> tuple[float, float]:
    # hidden stack plus the mean and log-variance heads; its input (data) needs no gradient
    f1, b1 = _mlp(rows, (n_in, *ENCODER), input_grad=False)
    f2, b2 = _mlp(rows, (ENCODER[-1], 2 * N_LATENT), input_grad=True)
    return f1 + f2, b1 + b2


def step_flops(n_features: int, block: int, sivae_model: bool) -> dict[str, float]:
    """Matmul FLOPs (forward + backward) of one training step, by part of the network."""
    parts = {
        "cell_encoder": _encoder(BATCH, n_features),
        "cell_decoder": _mlp(BATCH, (N_LATENT, *DECODER), input_grad=True),
        # mean z_L @ v_L^T (B, H) x (H, f_b), and the per-cell variance head sigma_d(z_L)
        "output": _mlp(BATCH, (DECODER[-1], block), input_grad=True),
        "variance_head": _mlp(BATCH, (DECODER[-1], 1), input_grad=True),
    }
    if sivae_model:
        parts["feature_encoder"] = _encoder(block, C_RED)
        parts["feature_decoder"] = _mlp(block, (N_LATENT, *DECODER), input_grad=True)
        parts["interpretability"] = _mlp(BATCH, (N_LATENT, block), input_grad=True)  # mean_z @ mean_v^T
    return {name: fwd + bwd for name, (fwd, bwd) in parts.items()}


# -- timing ---------------------------------------------------------------------------------------
class Run:
    """One model on one data set, trained by the package's Trainer on a subset of cells."""

    def __init__(self, label: str, model: Any, phase: str, n_steps: int, seed: int) -> None:
        self.label, self.model, self.phase = label, model, phase
        c = model.config
        cells = CellMatrix(model.adata.X)  # dense float32: shared with adata, not copied
        subset = np.sort(np.random.default_rng(seed).choice(model.train_idx, n_steps * BATCH, replace=False))
        block = c.feature_batch_size or default_feature_batch(
            model.adata.n_vars, c.batch_size, feature_path=model.feature_x is not None)
        config = TrainConfig(batch_size=c.batch_size, feature_batch_size=block,
                             learning_rate=c.learning_rate, l2=c.l2, seed=c.seed)
        data = TrainingData(cells=cells, train_idx=subset, val_idx=model.val_idx, feature_x=model.feature_x)
        self.trainer = Trainer(model.module, data, config, device=model.device, progress=False)
        self.run = self.trainer.begin_phase(phase)  # this phase's parameters train, as in fit()
        self.block = self.trainer.sampler.feature_batch_size
        self.n_steps, self.times, self.eval_seconds = n_steps, [], float("nan")

    def train_pass(self) -> float:
        return self.trainer.train_epoch(self.run)["seconds"]

    def time_eval(self) -> None:
        t0 = time.perf_counter()
        self.trainer.evaluate(self.phase)
        self.eval_seconds = time.perf_counter() - t0


def build(adata: AnnData, kind: str, block: int | None, seed: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    common = dict(n_latent=N_LATENT, encoder_hidden=ENCODER, decoder_hidden=DECODER,
                  batch_size=BATCH, feature_batch_size=block, seed=seed, device="cpu")
    if kind == "siVAE":
        model = sivae.SIVAE(adata, c_red=C_RED, **common)
    else:
        model = sivae.VAE(adata, **common)
    return model, time.perf_counter() - t0


def time_dataset(name: str, adata: AnnData, specs: list[tuple[str, int | None]], args: argparse.Namespace) -> list[dict]:
    """Build every model of ``specs``, time them in turns, and return one result row each."""
    runs = []
    for kind, block in specs:
        model, setup = build(adata, kind, block, args.seed)
        run = Run(kind, model, "joint" if kind == "siVAE" else "cell", args.steps, args.seed)
        run.setup_seconds = setup
        runs.append(run)
        print(f"  built {kind} (features/step {run.block}) in {setup:.1f} s", flush=True)
    for r in range(args.repeats + 1):  # pass 0 is the warm-up
        for run in runs:
            t = run.train_pass()
            if r > 0:
                run.times.append(t)
            print(f"  {run.label:5s} block {run.block:6d} pass {r}: {t:6.2f} s for {run.n_steps} steps"
                  f"{' (warm-up)' if r == 0 else ''}", flush=True)
    if not args.no_eval:
        for run in runs:
            run.time_eval()
            print(f"  {run.label:5s} block {run.block:6d} held-out evaluation: {run.eval_seconds:.2f} s", flush=True)
    return [result_row(name, adata, run, args) for run in runs]


def result_row(name: str, adata: AnnData, run: Run, args: argparse.Namespace) -> dict:
    n_train = len(run.model.train_idx)
    seconds = min(run.times)  # the least disturbed pass
    per_cell = seconds / (run.n_steps * BATCH)
    flops = step_flops(adata.n_vars, run.block, run.label == "siVAE")
    step_total = sum(flops.values())
    achieved = step_total * run.n_steps / seconds / 1e9
    return {
        "dataset": name, "n_cells": adata.n_obs, "n_features": adata.n_vars, "n_train": n_train,
        "model": run.label, "phase": run.phase, "features_per_step": run.block,
        "default_block": run.model.config.feature_batch_size is None,
        "steps_timed": run.n_steps, "pass_seconds": run.times, "seconds_per_step": seconds / run.n_steps,
        "median_seconds_per_epoch": statistics.median(run.times) / (run.n_steps * BATCH) * n_train,
        "seconds_per_epoch": per_cell * n_train, "cells_per_second": 1.0 / per_cell,
        "eval_seconds": run.eval_seconds, "setup_seconds": run.setup_seconds,
        "gflop_per_step": step_total / 1e9, "gflop_per_step_parts": {k: v / 1e9 for k, v in flops.items()},
        "achieved_gflops": achieved,
    }


# -- report ---------------------------------------------------------------------------------------
def add_ratios(rows: list[dict], peak: float, typical: float) -> None:
    """Each row's epoch time over that of its data set's VAE with the package default feature block."""
    for row in rows:
        ref = next(r for r in rows if r["dataset"] == row["dataset"] and r["model"] == "VAE" and r["default_block"])
        row["ratio_to_vae"] = row["seconds_per_epoch"] / ref["seconds_per_epoch"]
        row["fraction_of_peak"] = row["achieved_gflops"] / peak
        row["fraction_of_typical"] = row["achieved_gflops"] / typical


def table(rows: list[dict]) -> str:
    head = (f"{'dataset':<15}{'model':<7}{'feat/step':>10}{'s/epoch':>9}{'+eval s':>9}{'cells/s':>9}"
            f"{'ratio':>7}{'GFLOP/step':>11}{'GFLOP/s':>9}{'%peak':>7}{'%typ':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = "-" if r["model"] == "VAE" and r["default_block"] else f"{r['ratio_to_vae']:.2f}"
        lines.append(
            f"{r['dataset']:<15}{r['model']:<7}{r['features_per_step']:>10d}{r['seconds_per_epoch']:>9.1f}"
            f"{r['eval_seconds']:>9.1f}{r['cells_per_second']:>9.0f}{ratio:>7}{r['gflop_per_step']:>11.2f}"
            f"{r['achieved_gflops']:>9.1f}{100 * r['fraction_of_peak']:>6.0f}%{100 * r['fraction_of_typical']:>5.0f}%"
        )
    return "\n".join(lines)


def fmt_load(load: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


FLAT = ("dataset", "n_cells", "n_features", "model", "phase", "features_per_step", "default_block",
        "seconds_per_epoch", "median_seconds_per_epoch", "eval_seconds", "cells_per_second", "ratio_to_vae",
        "gflop_per_step", "achieved_gflops", "fraction_of_peak")


def flat_table(rows: list[dict]) -> list[dict]:
    """The rows as benchmarks/README.md's contract wants them: flat, the same keys in each."""
    return [{k: r[k] for k in FLAT} for r in rows]


def claims(rows: list[dict]) -> list[dict]:
    si = [r for r in rows if r["model"] == "siVAE" and r["default_block"]]
    ours = "; ".join(f"{r['dataset']}: {r['ratio_to_vae']:.2f}" for r in si)
    ok = all(r["ratio_to_vae"] <= 1.2 for r in si)
    return [claim("a siVAE training epoch (joint step) costs about a VAE epoch (DESIGN.md Scale: <= 1.2)",
                  "comparable training time to a standard VAE",
                  f"siVAE/VAE seconds per epoch, default feature block: {ours}", verdict(ok))]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 cells x 2,000 / 4,000 features, few steps")
    p.add_argument("--cells", type=int, default=None, help="cells per data set (default 20,000; quick 2,000)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed pass (default 6; quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes after the warm-up (default 5; quick 1)")
    p.add_argument("--no-eval", action="store_true", help="skip timing the held-out evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for train_speed.json (default benchmarks/results/, results/quick/ with "
                        "--quick); a path ending in .json names the file itself")
    args = p.parse_args()
    args.cells = args.cells or (2_000 if args.quick else 20_000)
    args.steps = args.steps or (2 if args.quick else 6)
    args.repeats = args.repeats or (1 if args.quick else 5)
    folder = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    args.out = folder if folder.suffix == ".json" else folder / "train_speed.json"
    return args


def main() -> None:
    args = parse_args()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    seconds = 1.0 if args.quick else 3.0
    rates_start = matmul_rates(seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul GFLOP/s: "
          f"{fmt_rates(rates_start)}", flush=True)
    wide = 4_000 if args.quick else 28_000
    plans = [
        (2_000, [("VAE", None), ("siVAE", None), ("siVAE", 2_000)]),
        (wide, [("VAE", None), ("siVAE", None), ("siVAE", 2_048)]),
    ]
    rows: list[dict] = []
    for n_features, specs in plans:
        name = f"{args.cells // 1000}k x {n_features:,}"
        t0 = time.perf_counter()
        adata = as_anndata(synthetic(args.cells, n_features, seed=args.seed))
        print(f"{name}: generated in {time.perf_counter() - t0:.1f} s", flush=True)
        rows += time_dataset(name, adata, specs, args)
        del adata
        gc.collect()
    rates_end = matmul_rates(seconds)
    # the best of the two measurements: a busy neighbour only ever lowers a rate
    peak, typical = (max(rates_start[k], rates_end[k]) for k in MATMUL_SHAPES)
    load = {"start": load_start, "end": os.getloadavg()}
    print(f"fp32 matmul GFLOP/s at the end: {fmt_rates(rates_end)}; load average (1, 5, 15 min) at start "
          f"{fmt_load(load['start'])}, at end {fmt_load(load['end'])} on {os.cpu_count()} cores")
    if max(load["start"][0], load["end"][0]) > 1.5 * (os.cpu_count() or 1):
        print("WARNING: other processes shared the CPU; absolute times are inflated, ratios less so "
              "(the models were timed in turns)")
    add_ratios(rows, peak, typical)
    text = table(rows)
    print("\n" + text)
    print("s/epoch: fastest timed pass of training steps, scaled to one epoch of the training cells "
          "(no evaluation); "
          "+eval s: one held-out evaluation as Trainer.fit runs after each epoch; ratio: s/epoch over "
          "the data set's VAE with the default feature block; %peak, %typ: achieved over the "
          "2048^3 and the 256x2000x1024 matmul rates.")
    payload = {
        "benchmark": "train_speed", "paper": "none", "command": command_line(),
        "quick": args.quick, "seconds": time.perf_counter() - t_start,
        "table": flat_table(rows), "claims": claims(rows),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "matmul_gflops": {"start": rates_start, "end": rates_end, "used": {"peak": peak, "typical": typical}},
        "load_average": load,
        "settings": {"n_latent": N_LATENT, "encoder_hidden": ENCODER, "decoder_hidden": DECODER,
                     "batch_size": BATCH, "c_red": C_RED, "steps_per_pass": args.steps,
                     "timed_passes": args.repeats, "quick": args.quick, "seed": args.seed},
        "rows": rows, "table_text": text, "total_seconds": time.perf_counter() - t_start,
    }
    write_result(payload, args.out.parent, name=args.out.name)
    print(f"wrote {args.out} ({payload['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
