"""Model folders on disk: ``config.json``, ``model.safetensors`` and ``preprocess.json``.

The file format and its checks live here, apart from the model classes: writing a folder whole
(via _files.py), reading it back without unpickling anything, reading the tensors' shapes from
the safetensors header before any tensor is allocated, and ``load_model``, which picks the class
from the folder. Model classes register themselves (:func:`register`), so this module imports
none of them and model.py / baselines.py import only this one: no import cycle.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anndata import AnnData
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ._constants import FILES
from ._errors import InputError
from ._files import atomic_folder, check_destination
from ._inputs import check_input_file
from .data.record import Preprocessing

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
    """A model folder's metadata, read and checked; tensors are read separately, after the shapes."""

    path: Path
    meta: dict[str, Any]
    preprocessing: Preprocessing | None
    # False for folders written before the preprocessing record was saved with every model
    has_preprocessing_record: bool


def write_model_folder(path: str | os.PathLike[str], *, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                       preprocessing: Preprocessing | None, overwrite: bool) -> None:
    """Write a model folder whole: under a temporary name, then renamed in place of ``path``.

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a model folder.
    """
    check_destination(path, what="model folder", overwrite=overwrite, folder=True,
                      owned_markers=MODEL_FILES, owned_allowed=MODEL_FOLDER_NAMES)
    record = {"preprocessed": False} if preprocessing is None else preprocessing.to_json()
    with atomic_folder(path, owned_markers=MODEL_FILES, owned_allowed=MODEL_FOLDER_NAMES) as tmp:
        (tmp / FILES.CONFIG).write_text(json.dumps(meta, indent=1))
        save_file(tensors, str(tmp / FILES.WEIGHTS))
        (tmp / FILES.PREPROCESS).write_text(json.dumps(record))


def read_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """config.json and preprocess.json of a saved model, refusing anything malformed."""
    path = Path(path)
    if path.is_file():
        raise InputError(f"{str(path)!r} is a file, not a model folder; pass the folder that "
                         "model.save (or sivae fit --model-dir) wrote")
    if not path.is_dir():
        raise InputError(f"model folder {str(path)!r} does not exist; train one with "
                         "`sivae fit IN -o OUT.h5ad --model-dir DIR` or model.save(DIR)")
    config_path, weights_path = path / FILES.CONFIG, path / FILES.WEIGHTS
    if not config_path.exists() or not weights_path.exists():
        raise InputError(f"{path} is not a saved sivae model (it needs {FILES.CONFIG} and {FILES.WEIGHTS})")
    for name in (FILES.CONFIG, FILES.WEIGHTS, FILES.PREPROCESS):  # a named pipe would block the read
        if os.path.lexists(path / name):
            check_input_file(path / name, what="model file")
    try:
        meta = json.loads(config_path.read_text())
        if not isinstance(meta, dict) or not all(k in meta for k in ("model", "config", "feature_names")):
            raise ValueError("it lacks the keys model, config and feature_names")
        if not isinstance(meta["model"], str) or not isinstance(meta["config"], dict):
            raise ValueError("model must be a name and config an object")
        names = meta["feature_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("feature_names must be a non-empty list of names")
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{config_path} is corrupt or not a sivae config ({err}); re-save the model") from err
    record_path = path / FILES.PREPROCESS
    preprocessing, has_record = None, record_path.is_file()
    if has_record:
        try:
            record = json.loads(record_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{record_path} is corrupt ({err}); re-save the model") from err
        preprocessing = Preprocessing.from_json(record, str(record_path))
        if preprocessing is not None and list(preprocessing.features) != names:
            raise InputError(f"{record_path} does not match the model's features; re-save the model")
    return ModelFolder(path=path, meta=meta, preprocessing=preprocessing, has_preprocessing_record=has_record)


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a model folder's weights, from the header alone."""
    weights = Path(path) / FILES.WEIGHTS
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as err:  # safetensors refuses truncated files and pickles alike
        raise InputError(f"{weights} is not a valid safetensors file (truncated, corrupt or a pickle); "
                         "re-save the model") from err


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The weights of a model folder (call :func:`tensor_shapes` first to check their sizes)."""
    weights = Path(path) / FILES.WEIGHTS
    try:
        return load_file(str(weights))
    except Exception as err:
        raise InputError(f"{weights} is not a valid safetensors file (truncated, corrupt or a pickle); "
                         "re-save the model") from err


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
