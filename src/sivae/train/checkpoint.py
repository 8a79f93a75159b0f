"""Checkpoints of a training run: plain state in, plain state out, written so a kill never loses one.

A checkpoint folder holds ``checkpoint.json`` (position, optimiser layout, early-stopping state,
sampler, history, settings) and the tensors it names, ``checkpoint-<n>.safetensors`` (weights,
best weights, optimiser moments, each rank's RNG state). Nothing is pickled.

The write order makes every interleaving safe without renaming folders: the new tensor file is
written whole under its own name, then ``checkpoint.json`` is replaced in one atomic rename to
point at it, and only then are older tensor files deleted. A kill at any step leaves a
``checkpoint.json`` that names a complete tensor file: the newest complete checkpoint; the
temporaries it leaves are removed by the next save, load or ``sivae fit`` that uses the folder.

``checkpoint.json`` also records the data trained on (numbers of cells and features, the feature
names, a digest of the cell names), so a resume on other data is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from .._constants import FILES
from .._errors import InputError
from .._files import atomic_file, recover_inside, write_bytes

_TENSORS = re.compile("^" + re.escape(FILES.CHECKPOINT_TENSORS).replace(r"\{\}", r"(\d+)") + "$")


@dataclass
class CheckpointState:
    """Everything a resumed run needs, as plain values and tensors."""

    position: dict[str, int]  # {"phase": i, "epoch": e}: where training continues
    module_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]  # torch.optim state_dict layout
    stopper: dict[str, Any]  # early stopping: best, best_epoch, bad_epochs
    sampler: dict[str, Any]
    history: list[dict[str, Any]]
    train_config: dict[str, Any]
    world_size: int = 1
    rng_states: list[torch.Tensor] = field(default_factory=list)  # rank 0 first
    best_state: dict[str, torch.Tensor] | None = None
    data: dict[str, Any] | None = None  # data_fingerprint of the training data; None: not recorded


def data_fingerprint(features: Any, cells: Any, covariates: bytes | None = None) -> dict[str, Any]:
    """What a checkpoint keeps of its data: sizes, feature names in order, a digest of cell names
    and, for a model with covariates, one of their coding and every cell's values (``covariates``)."""
    features, cells = [str(f) for f in features], [str(c) for c in cells]
    digest = hashlib.sha256("\n".join(cells).encode("utf-8", "surrogatepass")).hexdigest()
    out = {"n_cells": len(cells), "n_features": len(features), "features": features, "cells_sha256": digest}
    if covariates is not None:
        out["covariates_sha256"] = hashlib.sha256(covariates).hexdigest()
    return out


def check_same_data(saved: dict[str, Any] | None, current: dict[str, Any] | None, where: str) -> None:
    """Refuse resuming a checkpoint on data other than those it was trained on."""
    if not saved or not current:
        return  # checkpoints of earlier versions record no data
    problem = None
    if (saved.get("n_cells"), saved.get("n_features")) != (current["n_cells"], current["n_features"]):
        problem = (f"{current['n_cells']:,} cells x {current['n_features']:,} features, the checkpoint's "
                   f"{saved.get('n_cells')} x {saved.get('n_features')}")
    elif saved.get("features") != current["features"]:
        theirs = list(saved.get("features") or [])
        i = next((i for i, (a, b) in enumerate(zip(current["features"], theirs)) if a != b), 0)
        problem = f"feature {i + 1} is {current['features'][i]!r}, the checkpoint's {theirs[i] if theirs else None!r}"
    elif saved.get("cells_sha256") != current["cells_sha256"]:
        problem = "other cell names or another order of cells"
    elif saved.get("covariates_sha256") != current.get("covariates_sha256"):
        problem = "other covariates: columns, categories or values"
    if problem:
        raise InputError(f"--resume on data that differ from those of {where} ({problem}); resume "
                         "on the same data, preprocessed the same way, or train afresh in a new checkpoint folder")


def save_checkpoint(directory: str | os.PathLike[str], state: CheckpointState) -> None:
    """Write ``state`` into ``directory`` (created if missing) as the newest checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _clean(directory)
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in state.module_state.items()}
    if state.best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in state.best_state.items()})
    opt_layout: dict[str, Any] = {"param_groups": state.optimizer_state["param_groups"], "state": {}}
    for pid, param_state in state.optimizer_state["state"].items():
        opt_layout["state"][str(pid)] = []
        for key, value in param_state.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
            opt_layout["state"][str(pid)].append(key)
    for rank, rng in enumerate(state.rng_states):
        tensors["rng.torch" if rank == 0 else f"rng.torch.rank{rank}"] = rng.cpu()
    previous = _tensor_files(directory)
    number = max(previous, default=0) + 1
    tensor_name = FILES.CHECKPOINT_TENSORS.format(number)
    with atomic_file(directory / tensor_name) as tmp:
        write_bytes(tmp, save_bytes(tensors))
    meta = {
        "tensors": tensor_name, "position": state.position, "optimizer": opt_layout,
        "stopper": state.stopper, "sampler": state.sampler, "history": state.history,
        "train_config": state.train_config, "world_size": state.world_size, "data": state.data,
    }
    with atomic_file(directory / FILES.CHECKPOINT_META) as tmp:
        write_bytes(tmp, json.dumps(meta).encode())
    for old in previous.values():  # only now is the new checkpoint the one that counts
        old.unlink(missing_ok=True)


def load_checkpoint(directory: str | os.PathLike[str] | None, *, rank: int = 0,
                    data: dict[str, Any] | None = None) -> CheckpointState:
    """Read and check the newest complete checkpoint in ``directory``; refuse anything malformed,
    or one trained on other data than ``data`` (a :func:`data_fingerprint`) when given."""
    if directory is None:
        raise InputError("resume=True needs a checkpoint_dir to resume from; pass checkpoint_dir")
    directory = Path(directory)
    _clean(directory)
    meta_path = directory / FILES.CHECKPOINT_META
    if not meta_path.is_file():
        raise InputError(f"no checkpoint in {directory}; train without resume first, "
                         "or point to the folder of an earlier run")
    try:
        meta = json.loads(meta_path.read_text())
        name = str(meta["tensors"])
        if not _TENSORS.match(name):
            raise ValueError(f"tensor file name {name!r} is not one sivae writes")
        tensors = load_file(str(directory / name))
        position = {"phase": int(meta["position"]["phase"]), "epoch": int(meta["position"]["epoch"])}
        if position["phase"] < 0 or position["epoch"] < 0:
            raise ValueError("negative position")
        stopper = {"best": float(meta["stopper"]["best"]), "best_epoch": int(meta["stopper"]["best_epoch"]),
                   "bad_epochs": int(meta["stopper"]["bad_epochs"])}
        opt_state = {int(pid): {key: tensors[f"optim.{pid}.{key}"] for key in keys}
                     for pid, keys in meta["optimizer"]["state"].items()}
        optimizer_state = {"state": opt_state, "param_groups": list(meta["optimizer"]["param_groups"])}
        state = CheckpointState(
            position=position, module_state=_prefixed(tensors, "module."),
            optimizer_state=optimizer_state, stopper=stopper, sampler=dict(meta["sampler"]),
            history=list(meta["history"]), train_config=dict(meta["train_config"]),
            world_size=int(meta.get("world_size", 1)), best_state=_prefixed(tensors, "best.") or None,
            data=meta.get("data") if isinstance(meta.get("data"), dict) else None,
        )
    except Exception as err:  # truncated, foreign or hand-edited files
        raise InputError(f"the checkpoint in {directory} is unreadable or incomplete "
                         f"({type(err).__name__}: {err}); delete it and train afresh") from err
    rng = tensors.get("rng.torch" if rank == 0 else f"rng.torch.rank{rank}")
    if rng is None:
        raise InputError(f"the checkpoint in {directory} lacks the random state of rank {rank}; "
                         "delete it and train afresh")
    state.rng_states = [rng]
    check_same_data(state.data, data, f"the checkpoint in {directory}")
    return state


def _clean(directory: Path) -> None:
    # temporaries of a save killed halfway: the checkpoint.json they would have replaced still stands
    if directory.is_dir() and not directory.is_symlink():
        recover_inside(directory)


def _tensor_files(directory: Path) -> dict[int, Path]:
    found = {}
    for path in directory.iterdir():
        match = _TENSORS.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
