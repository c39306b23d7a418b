"""Any timm model as a source network (``timm/<name>``), random or from a local checkpoint file."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
from timm.models._features import _module_list
from torch import nn

from etlbench.backbones.base import Preprocess, SourceNetwork
from etlbench.model_io import load_tensors


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"timm checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = load_tensors(path, "a timm state dict")
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def _feature_blocks(model: nn.Module) -> nn.Sequential:
    """Group the model's top-level modules into one block per timm feature point (as FeatureListNet does)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"timm model {type(model).__name__} declares no feature_info, so it has no cut points")
    targets = [f["module"] for f in info]
    for flatten in (False, True):  # feature points are top-level modules, or children of a top-level Sequential
        blocks: dict[str, nn.Module] = {}
        group: list[nn.Module] = []
        for flat_name, dotted_name, module in _module_list(model, flatten_sequential=flatten):
            group.append(module)
            if dotted_name in targets:
                blocks[flat_name] = group[0] if len(group) == 1 else nn.Sequential(*group)
                group = []
                if len(blocks) == len(targets):
                    return nn.Sequential(OrderedDict(blocks))
    raise ValueError(f"timm model {type(model).__name__}: feature points {targets} are not top-level modules; "
                     "it cannot be used as a sequential source network")


def timm_backbone(model_name: str, weights: str | Path | None = None) -> SourceNetwork:
    """``timm/<name>``: a timm model's feature stages (its ``feature_info``) as the trunk; the embedding is the
    globally pooled output of the last stage."""
    model = timm.create_model(model_name, pretrained=False)
    if weights is not None:
        model.load_state_dict(_load_state_dict(Path(weights)))
    cfg = model.pretrained_cfg
    _, h, w = cfg.get("input_size", (3, 224, 224))
    preprocess = Preprocess(
        input_size=(h, w),
        mean=tuple(255.0 * m for m in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(255.0 * s for s in cfg.get("std", (0.229, 0.224, 0.225))),
    )
    blocks = _feature_blocks(model)
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # an ImageNet classifier is no face embedding
    source = "random weights" if weights is None else f"weights from {weights}"
    return SourceNetwork(blocks, pooled, preprocess, name=f"timm/{model_name}",
                         description=f"timm {model_name} ({source})")
