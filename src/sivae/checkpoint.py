"""Checkpoints of a training run: plain state in, plain state out, written so a kill never loses one.

A checkpoint folder holds ``checkpoint.json`` (position, optimiser layout, early-stopping state,
sampler, history, settings) and the tensors it names, ``checkpoint-<n>.safetensors`` (weights,
best weights, optimiser moments, each rank's RNG state). Nothing is pickled.

The write order makes every interleaving safe without renaming folders: the new tensor file is
written whole under its own name, then ``checkpoint.json`` is replaced in one atomic rename to
point at it, and only then are older tensor files deleted. A kill at any step leaves a
``checkpoint.json`` that names a complete tensor file: the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ._constants import FILES
from ._errors import InputError
from ._files import atomic_file

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


def save_checkpoint(directory: str | os.PathLike[str], state: CheckpointState) -> None:
    """Write ``state`` into ``directory`` (created if missing) as the newest checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
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
        save_file(tensors, str(tmp))
    meta = {
        "tensors": tensor_name, "position": state.position, "optimizer": opt_layout,
        "stopper": state.stopper, "sampler": state.sampler, "history": state.history,
        "train_config": state.train_config, "world_size": state.world_size,
    }
    with atomic_file(directory / FILES.CHECKPOINT_META) as tmp:
        tmp.write_text(json.dumps(meta))
    for old in previous.values():  # only now is the new checkpoint the one that counts
        old.unlink(missing_ok=True)


def load_checkpoint(directory: str | os.PathLike[str] | None, *, rank: int = 0) -> CheckpointState:
    """Read and check the newest complete checkpoint in ``directory``; refuse anything malformed."""
    if directory is None:
        raise InputError("resume=True needs a checkpoint_dir to resume from; pass checkpoint_dir")
    directory = Path(directory)
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
        )
    except Exception as err:  # truncated, foreign or hand-edited files
        raise InputError(f"the checkpoint in {directory} is unreadable or incomplete "
                         f"({type(err).__name__}: {err}); delete it and train afresh") from err
    rng = tensors.get("rng.torch" if rank == 0 else f"rng.torch.rank{rank}")
    if rng is None:
        raise InputError(f"the checkpoint in {directory} lacks the random state of rank {rank}; "
                         "delete it and train afresh")
    state.rng_states = [rng]
    return state


def _tensor_files(directory: Path) -> dict[int, Path]:
    found = {}
    for path in directory.iterdir():
        match = _TENSORS.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
