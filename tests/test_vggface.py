"""VGG-Face (Parkhi et al., BMVC 2015): architecture, cut points, and both weight formats (random weights written
to temporary files in the ``vgg_face_dag`` and keras-vggface layouts, read back, and checked tensor by tensor and
against independent reference computations of ``fc6``)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from etlbench.backbones.vggface import NUM_PARAMS, load_vggface_weights, vggface16
from etlbench.registry import BACKBONES

STAGES = [["conv1_1", "conv1_2"], ["conv2_1", "conv2_2"], ["conv3_1", "conv3_2", "conv3_3"],
          ["conv4_1", "conv4_2", "conv4_3"], ["conv5_1", "conv5_2", "conv5_3"]]
CONV_SHAPES = {name: (out, inp, 3, 3) for name, inp, out in zip(
    [n for s in STAGES for n in s],
    [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512],
    [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512], strict=True)}
FC_SHAPES = {"fc6": (4096, 25088), "fc7": (4096, 4096), "fc8": (2622, 4096)}
LAYERS = [*CONV_SHAPES, *FC_SHAPES]


def our_param(net, layer: str) -> str:
    """Where the test expects ``vgg_face_dag`` layer ``layer`` to live in our network (written out independently)."""
    if layer in ("fc6", "fc7"):
        return f"blocks.{layer}.conv"
    if layer == "fc8":
        return "embedding.fc"
    return f"blocks.pool{layer[4]}.{layer}"


def random_dag_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for layer, shape in {**CONV_SHAPES, **FC_SHAPES}.items():
        fan_in = int(np.prod(shape[1:]))
        state[f"{layer}.weight"] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        state[f"{layer}.bias"] = torch.randn(shape[0], generator=g) * 0.1
    return state


def write_keras_h5(path, kernels: dict[str, np.ndarray], biases: dict[str, np.ndarray], model_group: bool) -> None:
    """An ``.h5`` in Keras' layout: ``layer_names`` (weightless layers too), per-layer ``weight_names``."""
    layer_names = ["input_1"]
    for i, stage in enumerate(STAGES, start=1):
        layer_names += [*stage, f"pool{i}"]
    layer_names += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_group else f
        root.attrs["layer_names"] = [n.encode() for n in layer_names]
        for name in layer_names:
            group = root.require_group(name)  # "fc6/relu" nests inside "fc6", as Keras writes it
            if name in kernels:
                group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
                group.create_dataset(f"{name}/kernel:0", data=kernels[name])
                group.create_dataset(f"{name}/bias:0", data=biases[name])
            elif "weight_names" not in group.attrs:
                group.attrs["weight_names"] = np.array([], dtype="S1")


def random_keras_weights(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    kernels, biases = {}, {}
    for layer, (out, inp, kh, kw) in CONV_SHAPES.items():
        kernels[layer] = rng.standard_normal((kh, kw, inp, out), dtype=np.float32) * np.float32((2 / (9 * inp)) ** .5)
    for layer, (out, inp) in FC_SHAPES.items():
        kernels[layer] = rng.standard_normal((inp, out), dtype=np.float32) * np.float32((2 / inp) ** 0.5)
    for layer, k in kernels.items():
        biases[layer] = rng.standard_normal(k.shape[-1], dtype=np.float32) * np.float32(0.1)
    return kernels, biases


def test_parameter_count_and_registry():
    net = vggface16()
    assert sum(p.numel() for p in net.parameters()) == NUM_PARAMS == 145_002_878
    assert "randomly initialised" in net.description
    assert "vggface16" in BACKBONES
    assert net.preprocess.input_size == (224, 224)
    assert net.preprocess.mean == (129.186279296875, 104.76238250732422, 93.59396362304688)


@pytest.mark.slow
def test_cut_points_and_input_sizes():
    net = vggface16().eval()
    names = ["pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7"]
    assert [(c.name, c.channels) for c in net.cut_points()] == list(
        zip(names, [64, 128, 256, 512, 512, 4096, 4096], strict=True))
    expected_sides = {224: [112, 56, 28, 14, 7, 1, 1], 112: [56, 28, 14, 7, 3, 1, 1]}
    for side, sides in expected_sides.items():
        x = torch.randn(1 if side == 224 else 2, 3, side, side) * 50
        with torch.inference_mode():
            outs = net.collect(x, names)
            logits = net.embedding(outs["fc7"])
        assert [outs[n].shape[-1] for n in names] == sides
        assert logits.shape == (x.shape[0], 2622) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_reads_vgg_face_dag_state_dict(tmp_path):
    state = random_dag_state()
    path = tmp_path / "vgg_face_dag.pth"
    torch.save(state, path)
    net = vggface16(weights=path).eval()
    assert str(path) in net.description and "randomly" not in net.description
    params = dict(net.named_parameters())
    for layer in LAYERS:
        name = our_param(net, layer)
        assert torch.equal(params[f"{name}.weight"].reshape(state[f"{layer}.weight"].shape), state[f"{layer}.weight"])
        assert torch.equal(params[f"{name}.bias"], state[f"{layer}.bias"]), layer
    # fc6 the vgg_face_dag way: nn.Linear over pool5 flattened in PyTorch's (C, H, W) order
    x = torch.randn(1, 3, 224, 224) * 50
    with torch.inference_mode():
        outs = net.collect(x, ["pool5", "fc6"])
    reference = F.relu(F.linear(outs["pool5"].flatten(1), state["fc6.weight"], state["fc6.bias"]))
    torch.testing.assert_close(outs["fc6"].flatten(1), reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


@pytest.mark.slow
def test_reads_keras_vggface_h5(tmp_path):
    kernels, biases = random_keras_weights()
    path = tmp_path / "rcmalli_vggface_tf_vgg16.h5"
    write_keras_h5(path, kernels, biases, model_group=True)  # a full-model save: weights under model_weights/
    net = vggface16(weights=path).eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    for layer in LAYERS:
        name = our_param(net, layer)
        torch.testing.assert_close(params[f"{name}.bias"], torch.from_numpy(biases[layer]), rtol=0, atol=0)
    for layer in CONV_SHAPES:
        ours, k = params[f"{our_param(net, layer)}.weight"], torch.from_numpy(kernels[layer])
        if layer == "conv1_1":  # Keras' input is BGR, ours RGB: our input channel c is Keras' channel 2 - c
            k = k.flip(2)
        assert torch.equal(ours, k.permute(3, 2, 0, 1)), layer
    for layer in ("fc7", "fc8"):
        ours = params[f"{our_param(net, layer)}.weight"].reshape(FC_SHAPES[layer])
        assert torch.equal(ours, torch.from_numpy(kernels[layer]).t()), layer

    # fc6 the Keras way: pool5 in NHWC, flattened (H, W, C), times the (25088, 4096) kernel
    x = torch.randn(1, 3, 224, 224) * 50
    with torch.inference_mode():
        outs = net.collect(x, ["pool5", "fc6"])
    pool5 = outs["pool5"].double()
    kernel6, bias6 = torch.from_numpy(kernels["fc6"]).double(), torch.from_numpy(biases["fc6"]).double()
    reference = F.relu(pool5.permute(0, 2, 3, 1).flatten(1) @ kernel6 + bias6)
    tol = 1e-4 * reference.abs().max().item()
    torch.testing.assert_close(outs["fc6"].flatten(1).double(), reference, rtol=1e-4, atol=tol)
    wrong_order = F.relu(pool5.flatten(1) @ kernel6 + bias6)  # the test would catch a missing permutation
    assert not torch.allclose(wrong_order, reference, rtol=1e-2, atol=100 * tol)


def test_bad_weight_files_name_the_problem(tmp_path):
    net = vggface16()  # errors are raised before any tensor is copied, so one network serves every case
    tiny = {k: torch.zeros(1) for layer in LAYERS for k in (f"{layer}.weight", f"{layer}.bias")}
    del tiny["conv3_2.bias"]
    torch.save(tiny, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match=r"missing\.pth.*missing keys \['conv3_2\.bias'\]"):
        load_vggface_weights(net, tmp_path / "missing.pth")
    tiny["conv3_2.bias"] = torch.zeros(1)
    torch.save(tiny, tmp_path / "shapes.pth")
    with pytest.raises(ValueError, match=r"shapes\.pth.*conv1_1\.weight has shape \(1,\)"):
        load_vggface_weights(net, tmp_path / "shapes.pth")

    kernel, bias = np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32)
    write_keras_h5(tmp_path / "partial.h5", {"conv1_1": kernel}, {"conv1_1": bias}, model_group=False)
    with pytest.raises(KeyError, match=r"partial\.h5.*layer 'conv1_2' has no 'kernel:0'"):
        load_vggface_weights(net, tmp_path / "partial.h5")
    files = {"absent_layer.h5": {"kernel:0": kernel, "bias:0": bias}, "nobias.h5": {"kernel:0": kernel}}
    for name, weights in files.items():
        with h5py.File(tmp_path / name, "w") as f:
            f.attrs["layer_names"] = [b"conv1_1"]
            group = f.create_group("conv1_1")
            group.attrs["weight_names"] = [f"conv1_1/{w}".encode() for w in weights]
            for w, value in weights.items():
                group[f"conv1_1/{w}"] = value
    with pytest.raises(KeyError, match=r"absent_layer\.h5.*layer 'conv1_2' not found"):
        load_vggface_weights(net, tmp_path / "absent_layer.h5")
    with pytest.raises(KeyError, match=r"nobias\.h5.*layer 'conv1_1' has no 'bias:0'"):
        load_vggface_weights(net, tmp_path / "nobias.h5")

    (tmp_path / "weights.onnx").touch()
    with pytest.raises(ValueError, match=r"weights\.onnx: unknown format"):
        load_vggface_weights(net, tmp_path / "weights.onnx")
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_vggface_weights(net, tmp_path / "absent.pth")
