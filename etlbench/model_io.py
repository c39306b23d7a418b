"""Saving and loading (pruned) models: tensors and channel counts only, so files load with ``weights_only=True``
and a pruned model is rebuilt from its unpruned architecture."""

from __future__ import annotations

import io

import torch
from torch import nn

_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")


def save_pruned(model: nn.Module, path_or_buffer: str | io.BytesIO, meta: dict | None = None) -> None:
    """Save a (pruned) model: its state dict and each layer's channel attributes, so that
    :func:`load_pruned` can rebuild it from the unpruned architecture. Only tensors and plain values are stored."""
    shapes = {name: {a: getattr(m, a) for a in _SHAPE_ATTRS if isinstance(getattr(m, a, None), int)}
              for name, m in model.named_modules()}
    torch.save({"state_dict": model.state_dict(), "shapes": {k: v for k, v in shapes.items() if v},
                "meta": meta or {}}, path_or_buffer)


def load_pruned(unpruned: nn.Module, path_or_buffer: str | io.BytesIO) -> nn.Module:
    """Load a model saved by :func:`save_pruned` into its unpruned architecture (``weights_only=True``)."""
    saved = torch.load(path_or_buffer, map_location="cpu", weights_only=True)
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
