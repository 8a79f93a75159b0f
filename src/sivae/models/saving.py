"""Model folders on disk: ``config.json``, ``model.safetensors`` and ``preprocess.json``.

The file format and its checks live here, apart from the model classes: writing a folder whole
(via _files.py), reading it back without unpickling anything, and ``load_model``, which picks the
class from the folder. config.json records the SHA-256 of the other two files, so a load reads
one save whole (all three files through one open handle of the folder, checked against the
hashes) or fails in one sentence, and weights copied from another run are refused; folders of
sivae 0.1.0 carry no hashes and load as before. Non-finite weights are refused. Model classes register themselves (:func:`register`), so this module imports
none of them and model.py / baselines.py import only this one: no import cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anndata import AnnData
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from .._commit import Commit
from .._constants import FILES
from .._errors import InputError
from .._files import atomic_outputs, check_destination, is_owned_folder, recover_outputs, write_bytes
from .._inputs import check_input_file
from ..data.record import Preprocessing

# config.json's record of the other files' SHA-256, binding them to it
HASHES = "sha256"
# the id of the `sivae fit` run that wrote a model, also in the h5ad's uns["sivae"]
RUN_ID = "run_id"

# a folder holding these, and no entry but the files a model folder has, is ours to replace
MODEL_FILES = (FILES.CONFIG, FILES.WEIGHTS)
MODEL_FOLDER_NAMES = "|".join(re.escape(name) for name in (FILES.CONFIG, FILES.WEIGHTS, FILES.PREPROCESS))
MODEL_CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load_model` under ``cls._name``."""
    MODEL_CLASSES[cls._name] = cls
    return cls


@dataclass
class ModelFolder:
    """A model folder read whole and checked: metadata, preprocessing record and weights."""

    path: Path
    meta: dict[str, Any]
    preprocessing: Preprocessing | None
    # False for folders written before the preprocessing record was saved with every model
    has_preprocessing_record: bool
    tensors: dict[str, torch.Tensor]


def write_model_folder(path: str | os.PathLike[str], *, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                       preprocessing: Preprocessing | None, overwrite: bool, commit: Commit | None = None) -> None:
    """Write a model folder whole: under a temporary name, then renamed in place of ``path``.

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a model folder.
    With ``commit``, the folder joins that commit (renamed in with the run's other outputs).
    """
    check_destination(path, what="model folder", overwrite=overwrite, folder=True,
                      owned_markers=MODEL_FILES, owned_allowed=MODEL_FOLDER_NAMES)
    if commit is None:
        with atomic_outputs() as own:
            write_model_folder(path, meta=meta, tensors=tensors, preprocessing=preprocessing,
                               overwrite=overwrite, commit=own)
        return
    tmp = commit.folder(Path(path), owned=lambda p: is_owned_folder(p, MODEL_FILES, MODEL_FOLDER_NAMES))
    record = {"preprocessed": False} if preprocessing is None else preprocessing.to_json()
    files = {FILES.WEIGHTS: save_bytes(tensors), FILES.PREPROCESS: json.dumps(record).encode()}
    meta = {**meta, HASHES: {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    files[FILES.CONFIG] = json.dumps(meta, indent=1).encode()
    for name, data in files.items():
        write_bytes(tmp / name, data)


def read_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """A saved model read whole and checked, refusing anything malformed, mixed or non-finite.

    Another process may be replacing the folder meanwhile: a read that finds the files of two
    saves (their hashes disagree) or a folder half gone is tried again, then refused.
    """
    path = Path(path)
    recover_outputs(path)  # a save killed halfway is finished (or dropped) first
    for attempt in range(3):
        try:
            return _check_folder(path, _read_files(path))
        except _Mixed as err:
            if attempt == 2:
                raise InputError(str(err)) from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class _Mixed(Exception):
    """The files read belong to different saves (or none): maybe a save in progress."""


def _read_files(path: Path) -> dict[str, bytes | None]:
    """config.json, model.safetensors and preprocess.json read through one handle of the folder,
    so all three come from the same folder even if another save renames a new one in meanwhile."""
    if path.is_file():
        raise InputError(f"{str(path)!r} is a file, not a model folder; pass the folder that "
                         "model.save (or sivae fit --model-dir) wrote")
    if not path.is_dir():
        raise InputError(f"model folder {str(path)!r} does not exist; train one with "
                         "`sivae fit IN -o OUT.h5ad --model-dir DIR` or model.save(DIR)")
    names = (FILES.CONFIG, FILES.WEIGHTS, FILES.PREPROCESS)
    for name in names:  # a named pipe would block the read
        if os.path.lexists(path / name):
            check_input_file(path / name, what="model file")
    use_fd = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY) if use_fd else None
    except FileNotFoundError:  # replaced this instant
        raise _Mixed(f"model folder {str(path)!r} disappeared while it was read (replaced by another "
                     "run?); load it again") from None
    try:
        return {name: _read_one(path, name, folder) for name in names}
    finally:
        if folder is not None:
            os.close(folder)


def _read_one(path: Path, name: str, folder: int | None) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder) if folder is not None else os.open(path / name, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError):
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _check_folder(path: Path, files: dict[str, bytes | None]) -> ModelFolder:
    config_path, weights_path, record_path = path / FILES.CONFIG, path / FILES.WEIGHTS, path / FILES.PREPROCESS
    if files[FILES.CONFIG] is None or files[FILES.WEIGHTS] is None:  # or a replaced folder, being deleted
        raise _Mixed(f"{path} is not a saved sivae model (it needs {FILES.CONFIG} and {FILES.WEIGHTS})")
    meta = _parse_config(config_path, files[FILES.CONFIG])
    tensors = _parse_tensors(weights_path, files[FILES.WEIGHTS])
    _check_hashes(path, meta, files)
    preprocessing, has_record = None, files[FILES.PREPROCESS] is not None
    if has_record:
        record = _parse_json(record_path, files[FILES.PREPROCESS], "corrupt")
        preprocessing = Preprocessing.from_json(record, str(record_path))
        if preprocessing is not None and list(preprocessing.features) != meta["feature_names"]:
            raise InputError(f"{record_path} does not match the model's features; re-save the model")
    return ModelFolder(path=path, meta=meta, preprocessing=preprocessing, has_preprocessing_record=has_record,
                       tensors=tensors)


def _parse_json(where: Path, data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: absurdly nested
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise InputError(f"{where} is {what} ({reason}); re-save the model") from None


def _parse_config(config_path: Path, data: bytes) -> dict[str, Any]:
    meta = _parse_json(config_path, data, "corrupt or not a sivae config")
    try:
        if not isinstance(meta, dict) or not all(k in meta for k in ("model", "config", "feature_names")):
            raise ValueError("it lacks the keys model, config and feature_names")
        if not isinstance(meta["model"], str) or not isinstance(meta["config"], dict):
            raise ValueError("model must be a name and config an object")
        names = meta["feature_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("feature_names must be a non-empty list of names")
        hashes = meta.get(HASHES)
        if hashes is not None and not (isinstance(hashes, dict) and all(
                isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) for v in hashes.values())):
            raise ValueError(f"{HASHES} must map file names to SHA-256 digests")
    except ValueError as err:
        raise InputError(f"{config_path} is corrupt or not a sivae config ({err}); re-save the model") from err
    return meta


def _check_hashes(path: Path, meta: dict[str, Any], files: dict[str, bytes | None]) -> None:
    """Each file config.json names must have the digest it records (folders of 0.1.0 name none)."""
    for name, digest in (meta.get(HASHES) or {}).items():
        data = files.get(name)
        if data is None and name == FILES.PREPROCESS:
            continue  # removed by hand: the model then cannot replay its preprocessing, and says so
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise _Mixed(f"{path / name} is not the file saved with {path / FILES.CONFIG} (its SHA-256 "
                         "differs: copied from another model, edited, or the folder was being replaced "
                         "while loading); load it again, or re-save the model")


def _parse_tensors(weights: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        tensors = load_bytes(data)
    except Exception as err:  # safetensors refuses truncated files and pickles alike
        raise InputError(f"{weights} is not a valid safetensors file (truncated, corrupt or a pickle); "
                         "re-save the model") from err
    bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors.values() if t.is_floating_point())
    if bad:
        raise InputError(f"{weights} holds {bad:,} non-finite weights (NaN or infinite): the model is "
                         "corrupt; train it again")
    return tensors


def run_id(uns: Any) -> dict[str, str]:
    """{RUN_ID: id} of the `sivae fit` run recorded in ``uns`` (the model's summary), or {}."""
    value = uns.get(RUN_ID) if isinstance(uns, dict) else None
    return {RUN_ID: value} if isinstance(value, str) else {}


def check_same_run(folder: ModelFolder, uns: Any, where: str) -> None:
    """Refuse a model folder and an AnnData written by two different `sivae fit` runs."""
    saved, fitted = run_id(folder.meta).get(RUN_ID), run_id(uns).get(RUN_ID)
    if saved and fitted and saved != fitted:
        raise InputError(f"the model in {str(folder.path)!r} and {where} come from two different `sivae fit` "
                         "runs (their run ids differ); use the model folder and h5ad of one run")


def load_model(path: str | os.PathLike[str], adata: AnnData | None = None, *, device: str = "auto") -> Any:
    """Load any saved sivae model (SIVAE, VAE or LDVAE), choosing the class from its config.json.

    Parameters
    ----------
    path
        Folder written by ``model.save`` or ``sivae fit --model-dir``.
    adata
        The data the model was trained on (its features in its order), to analyse or train
        further; None: the model alone, to embed new cells (see ``SIVAE.load``).
    device
        "auto", "cpu" or "cuda".
    """
    folder = read_model_folder(path)
    cls = MODEL_CLASSES.get(folder.meta["model"])
    if cls is None:
        raise InputError(f"{path} holds an unknown model type {folder.meta['model']!r}; was it "
                         "written by a newer sivae?")
    loader: Callable[..., Any] = cls.load
    return loader(path, adata, device=device)
