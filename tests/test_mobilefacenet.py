"""MobileFaceNet (Chen et al., 2018): layout against the checkpoint's key list, strict loading, LFW verification."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from etlbench.backbones.mobilefacenet import (
    EMBEDDING_DIM,
    NUM_PARAMS,
    build_mobilefacenet,
    checkpoint_key_to_ours,
    load_checkpoint,
    mobilefacenet,
)
from etlbench.paths import models_root
from etlbench.registry import BACKBONES
from etlbench.verification import verify

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = models_root() or SHARED / "models"  # ETLBENCH_MODELS, else beside the data root
DATA = Path(os.environ.get("ETLBENCH_DATA") or SHARED / "data")
CKPT_DIR = MODELS / "mobilefacenet_casia"
CKPT = CKPT_DIR / "068.ckpt"
SHAPES_TSV = CKPT_DIR / "state_dict_shapes.tsv"
LFW = DATA / "lfw_pairs" / "lfw_pairs_64.npz"

needs_ckpt = pytest.mark.skipif(not CKPT.is_file(), reason=f"MobileFaceNet checkpoint not found at {CKPT}")


@pytest.fixture(scope="module")
def net():
    if not CKPT.is_file():
        pytest.skip(f"MobileFaceNet checkpoint not found at {CKPT}")
    return mobilefacenet(CKPT).eval()


def _tsv_shapes() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in SHAPES_TSV.read_text().splitlines()[1:] if line.strip()]
    return {key: () if shape == "scalar" else tuple(int(s) for s in shape.split("x")) for key, shape, _ in rows}


@pytest.mark.skipif(not SHAPES_TSV.is_file(), reason=f"{SHAPES_TSV} not found")
def test_state_dict_matches_checkpoint_key_list():
    expected = {checkpoint_key_to_ours(k): shape for k, shape in _tsv_shapes().items()}
    ours = {k: tuple(v.shape) for k, v in build_mobilefacenet().state_dict().items()}
    assert list(ours) == list(expected)
    assert ours == expected


def test_key_mapping():
    assert checkpoint_key_to_ours("blocks.14.conv.7.running_var") == "blocks.block14.conv.7.running_var"
    assert checkpoint_key_to_ours("dw_conv1.prelu.weight") == "blocks.dw_conv1.prelu.weight"
    assert checkpoint_key_to_ours("linear7.conv.weight") == "embedding.linear7.conv.weight"


def test_parameter_count():
    model = build_mobilefacenet()
    # the manifest's figure counts every state-dict tensor (BN running statistics too) but num_batches_tracked
    stored = sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert stored == NUM_PARAMS == 1_019_136
    assert sum(p.numel() for p in model.parameters()) == 999_552  # learnable only


def test_architecture_cut_points_and_residuals():
    model = build_mobilefacenet().eval()
    names = ["conv1", "dw_conv1", *(f"block{i}" for i in range(15)), "conv2"]
    assert [c.name for c in model.cut_points()] == names
    with torch.inference_mode():
        outs = model.collect(torch.zeros(1, 3, 112, 96), names)
    sizes = {n: tuple(outs[n].shape[1:]) for n in ("conv1", "block0", "block5", "block12", "conv2")}
    assert sizes == {"conv1": (64, 56, 48), "block0": (64, 28, 24), "block5": (128, 14, 12),
                     "block12": (128, 7, 6), "conv2": (512, 7, 6)}
    residual = [i for i in range(15) if getattr(model.blocks, f"block{i}").connect]
    assert residual == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14]
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 112, 96)).shape == (2, EMBEDDING_DIM)
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, EMBEDDING_DIM)  # GDConv input pooled to 7x6


@needs_ckpt
def test_loads_the_checkpoint_exactly():
    model = load_checkpoint(build_mobilefacenet(), CKPT)
    state = torch.load(CKPT, map_location="cpu", weights_only=True)["net_state_dict"]
    ours = model.state_dict()
    for key, value in state.items():
        assert torch.equal(ours[checkpoint_key_to_ours(key)], value), key
    assert "epoch 68" in model.description
    assert "mobilefacenet" in BACKBONES


@needs_ckpt
def test_bad_checkpoints_name_the_key(tmp_path):
    ckpt = torch.load(CKPT, map_location="cpu", weights_only=True)
    state = ckpt["net_state_dict"]
    missing = dict(state)
    del missing["blocks.7.conv.3.weight"]
    torch.save({"net_state_dict": missing}, tmp_path / "missing.ckpt")
    with pytest.raises(KeyError, match=r"missing\.ckpt.*blocks\.block7\.conv\.3\.weight"):
        load_checkpoint(build_mobilefacenet(), tmp_path / "missing.ckpt")
    wrong = dict(state, **{"linear1.conv.weight": torch.zeros(256, 512, 1, 1)})
    torch.save({"net_state_dict": wrong}, tmp_path / "wrong.ckpt")
    with pytest.raises(ValueError, match=r"wrong\.ckpt.*embedding\.linear1\.conv\.weight"):
        load_checkpoint(build_mobilefacenet(), tmp_path / "wrong.ckpt")
    torch.save(state, tmp_path / "bare.ckpt")
    with pytest.raises(KeyError, match="net_state_dict"):
        load_checkpoint(build_mobilefacenet(), tmp_path / "bare.ckpt")


def test_missing_default_checkpoint_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ETLBENCH_MODELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"068\.ckpt.*weights=.*ETLBENCH_MODELS") as err:
        mobilefacenet()
    assert str(tmp_path) in str(err.value)
    monkeypatch.delenv("ETLBENCH_MODELS")
    monkeypatch.delenv("ETLBENCH_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="no models root"):
        mobilefacenet()


@pytest.mark.slow
@pytest.mark.skipif(not LFW.is_file(), reason=f"LFW pairs not found at {LFW}")
def test_lfw_verification(net):
    """The LFW protocol on View 2 folds 0 and 1 (1,200 pairs; each fold scored at the threshold chosen on the other).

    The stored crops are fixed central 120x120 crops of (probably LFW-a) grayscale images, resized to 64x64, not
    the SphereFace-aligned 112x96 RGB crops the network was trained on, so accuracy is below the published 99.3%.
    Measured on all ten folds (grayscale repeated to RGB, 64x64 stretched to 112x96): accuracy 0.939 +- 0.014, AUC
    0.982, TAR 0.637 at FAR 1e-3.
    """
    arrays = dict(np.load(LFW))
    kept = arrays["pair_fold"] < 2
    pairs = {k: arrays[k][kept] for k in ("pair_a", "pair_b", "pair_same", "pair_fold")}
    result = verify(net, {"images": arrays["images"], **pairs}, net.preprocess, (112, 96), "lfw_pairs")
    print(f"MobileFaceNet LFW folds 0-1: accuracy {result.accuracy:.4f}, AUC {result.auc:.4f}")
    assert len(result.fold_accuracy) == 2
    assert result.auc > 0.97
    assert result.accuracy > 0.91
