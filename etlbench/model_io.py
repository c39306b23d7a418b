"""Saving and loading (pruned) models: tensors and channel counts only, so files load with ``weights_only=True``
and a pruned model is rebuilt from its unpruned architecture."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
from typing import Any

import torch
from torch import nn

from etlbench.errors import ConfigError

_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError,
                struct.error, zipfile.BadZipFile)  # what torch.load raises on a file that is not a safe checkpoint
_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")


def _load_reason(err: BaseException) -> str:
    """Why torch.load refused a file, in one short line that never suggests loading it unsafely."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # a pickle of something other than tensors and plain containers
        text = "it holds objects other than tensors: " + text.split("WeightsUnpickler error:", 1)[1].strip()
    elif isinstance(err, EOFError):
        text = "the file is empty or truncated"
    first = text.strip().split("\n", 1)[0].split(". ", 1)[0].strip().rstrip(".")[:200]
    if not first or "weights_only" in first or "pickle" in first.lower():
        return type(err).__name__
    return first if isinstance(err, pickle.UnpicklingError | RuntimeError | EOFError) else \
        f"{type(err).__name__}: {first}"


def _check_archive(path: str, what: str) -> None:
    """A zip checkpoint (torch's format since 1.6) must unpack to no more than it weighs: torch stores its records
    uncompressed, so a compressed one could make the loader allocate far more than the file's size."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    unpacked, size = sum(i.file_size for i in infos), os.path.getsize(path)
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or unpacked > size:
        raise ConfigError(f"{path}: not a torch checkpoint of {what}: its records are compressed to unpack to "
                          f"{unpacked:,} bytes from a file of {size:,} (torch stores them as they are)")


def load_tensors(path: str | os.PathLike | io.BytesIO, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only. A file that
    cannot be read so (an arbitrary pickle, a truncated or foreign file) is a one-line :class:`ConfigError` naming
    the file and ``what`` was expected (e.g. ``"a MobileFaceNet state dict"``); it is never loaded otherwise."""
    where = os.fspath(path) if isinstance(path, str | os.PathLike) else "<buffer>"
    if where != "<buffer>" and zipfile.is_zipfile(where):
        _check_archive(where, what)
    try:
        with warnings.catch_warnings():  # torch warns of a pickle protocol it may not read: the error says enough
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {what}: {err.strerror or type(err).__name__}") from err
    except _LOAD_ERRORS as err:
        raise ConfigError(f"{where}: not a weights-only torch checkpoint of {what}: {_load_reason(err)}") from err


def save_pruned(model: nn.Module, path_or_buffer: str | io.BytesIO, meta: dict | None = None) -> None:
    """Save a (pruned) model: its state dict and each layer's channel attributes, so that
    :func:`load_pruned` can rebuild it from the unpruned architecture. Only tensors and plain values are stored."""
    shapes = {name: {a: getattr(m, a) for a in _SHAPE_ATTRS if isinstance(getattr(m, a, None), int)}
              for name, m in model.named_modules()}
    torch.save({"state_dict": model.state_dict(), "shapes": {k: v for k, v in shapes.items() if v},
                "meta": meta or {}}, path_or_buffer)


def load_pruned(unpruned: nn.Module, path_or_buffer: str | io.BytesIO) -> nn.Module:
    """Load a model saved by :func:`save_pruned` into its unpruned architecture (``weights_only=True``)."""
    saved = load_tensors(path_or_buffer, "a pruned model saved by etlbench")
    modules = dict(unpruned.named_modules())
    for name, attrs in saved["shapes"].items():
        if name not in modules:
            raise KeyError(f"saved layer {name!r} does not exist in {type(unpruned).__name__}")
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)
    for key, tensor in saved["state_dict"].items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        current = getattr(module, leaf)
        if isinstance(current, nn.Parameter):
            setattr(module, leaf, nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        elif isinstance(current, torch.Tensor):
            module.register_buffer(leaf, torch.empty_like(tensor))
    unpruned.load_state_dict(saved["state_dict"])
    return unpruned
