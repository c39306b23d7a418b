"""Any timm model is a source network: its feature stages are the cut points."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from etlbench.backbones import create_backbone
from etlbench.registry import UnknownNameError


def test_timm_resnet_stages_are_cut_points() -> None:
    net = create_backbone("timm/resnet18")
    assert [(p.name, p.channels) for p in net.cut_points()] == [
        ("act1", 64), ("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]
    x = torch.randn(2, 3, 64, 64)
    assert net(x).shape == (2, 512)
    assert net.trunk("layer2")(x).shape == (2, 128, 8, 8)
    assert net.preprocess.input_size == (224, 224) and net.preprocess.std[0] == pytest.approx(0.229 * 255)


def test_timm_local_checkpoint_is_loaded(tmp_path: Path) -> None:
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    net = create_backbone("timm/resnet18", weights=path)
    torch.testing.assert_close(net.blocks.act1[0].weight, reference.conv1.weight)


def test_timm_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone("timm/resnet18", weights=tmp_path / "absent.pth")
    with pytest.raises(UnknownNameError, match="Unknown backbone 'dlib-resnet'"):
        create_backbone("dlib-resnet")
