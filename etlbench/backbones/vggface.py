"""VGG-Face, the source network of the ETL paper, built from timm's VGG-16.

O. M. Parkhi, A. Vedaldi, A. Zisserman, "Deep Face Recognition", BMVC 2015: VGG-16 (Simonyan & Zisserman,
ICLR 2015) trained to classify 2,622 identities. 145,002,878 parameters.

The trunk is five conv stages (``pool1`` .. ``pool5``, each ending with its max-pool) followed by ``fc6`` and
``fc7`` written as convolutions (7x7 and 1x1, as timm's ``ConvMlp``), so the network runs at any input of at least
32 px; the embedding is the 2622-way ``fc8`` classifier (global average pool, a no-op at 224 px, flatten, Linear).
ReLUs are not in-place so that forward hooks on convolutions (pruning criteria) see the pre-activation outputs.

Weights are read from a local file, in one of two formats (:func:`load_vggface_weights`):

* ``.pth`` / ``.pt``: the PyTorch state dict of S. Albanie's ``vgg_face_dag`` conversion of the MatConvNet
  model (keys ``conv1_1.weight`` .. ``fc8.bias``; ``fc6`` is an ``nn.Linear`` over the (C, H, W)-flattened pool5).
* ``.h5`` / ``.hdf5``: keras-vggface's ``rcmalli_vggface_tf_vgg16.h5`` (R. C. Malli). Conv kernels are HWIO, dense
  kernels are (in, out), ``fc6`` reads pool5 flattened in Keras' channels-last (H, W, C) order, and the network
  takes **BGR** input (``keras_vggface.utils.preprocess_input(version=1)`` flips RGB to BGR); the loader converts
  all of this so that both formats give the same RGB network with the ``vgg_face_dag`` preprocessing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models.vgg import cfgs as timm_vgg_cfgs
from torch import nn

from etlbench.backbones.base import Preprocess, SourceNetwork
from etlbench.model_io import load_tensors

NUM_IDENTITIES = 2622
NUM_PARAMS = 145_002_878
#: ``vgg_face_dag.meta``: RGB mean of the training faces in 0..255 units, unit std, 224 x 224 input.
VGGFACE_PREPROCESS = Preprocess(
    input_size=(224, 224),
    mean=(129.186279296875, 104.76238250732422, 93.59396362304688),
    std=(1.0, 1.0, 1.0),
)


def _conv_layer_names() -> list[list[str]]:
    """``[["conv1_1", "conv1_2"], ..., ["conv5_1", "conv5_2", "conv5_3"]]`` from timm's VGG-16 config."""
    stages: list[list[str]] = [[]]
    for v in timm_vgg_cfgs["vgg16"]:
        if v == "M":
            stages.append([])
        else:
            stages[-1].append(f"conv{len(stages)}_{len(stages[-1]) + 1}")
    return [s for s in stages if s]


CONV_STAGES = _conv_layer_names()
#: Every weighted layer, in the ``vgg_face_dag`` / keras-vggface naming.
LAYERS: tuple[str, ...] = (*(n for s in CONV_STAGES for n in s), "fc6", "fc7", "fc8")


class ConvFC(nn.Module):
    """A fully connected layer written as a convolution (``fc6``: 7x7, ``fc7``: 1x1), then ReLU and dropout.

    As timm's ``ConvMlp``, an input smaller than the kernel is first average-pooled *up* to the kernel size, so
    the network runs at small inputs; at 224 px ``fc6`` sees a 7x7 pool5 and is exactly the original layer.
    """

    def __init__(self, conv: nn.Conv2d, drop_rate: float = 0.5):
        super().__init__()
        self.conv = conv
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.conv.kernel_size
        if x.shape[-2] < kh or x.shape[-1] < kw:
            x = F.adaptive_avg_pool2d(x, (max(kh, x.shape[-2]), max(kw, x.shape[-1])))
        return self.drop(self.relu(self.conv(x)))


def build_vggface16() -> SourceNetwork:
    """VGG-Face with random weights (timm's VGG initialisation), as a :class:`SourceNetwork`."""
    model = timm.create_model("vgg16", num_classes=NUM_IDENTITIES, pretrained=False)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    if len(convs) != sum(map(len, CONV_STAGES)) or len(pools) != len(CONV_STAGES):
        raise RuntimeError("timm's vgg16 no longer has the VGG-16 layout this module expects")
    conv_iter = iter(convs)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for stage, (names, pool) in enumerate(zip(CONV_STAGES, pools, strict=True), start=1):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for name in names:
            layers[name] = next(conv_iter)
            layers[name.replace("conv", "relu")] = nn.ReLU()
        layers["pool"] = pool
        blocks[f"pool{stage}"] = nn.Sequential(layers)
    blocks["fc6"] = ConvFC(model.pre_logits.fc1)
    blocks["fc7"] = ConvFC(model.pre_logits.fc2)
    return SourceNetwork(
        nn.Sequential(blocks),
        model.head,  # timm ClassifierHead: global average pool (+ flatten), Linear 4096 -> 2622
        VGGFACE_PREPROCESS,
        name="vggface16",
        description="VGG-Face (VGG-16, 2622 identities), randomly initialised: no weights loaded",
    )


def _layer(net: SourceNetwork, name: str) -> nn.Conv2d | nn.Linear:
    """The module holding ``vgg_face_dag`` layer ``name`` (``conv3_2``, ``fc6``, ``fc8``, ...)."""
    if name == "fc8":
        return net.embedding.fc
    if name in ("fc6", "fc7"):
        return getattr(net.blocks, name).conv
    stage = name[len("conv") : name.index("_")]
    return getattr(getattr(net.blocks, f"pool{stage}"), name)


def expected_shapes(net: SourceNetwork) -> dict[str, tuple[int, ...]]:
    """Every tensor of the ``vgg_face_dag`` state dict with its shape (fc layers as ``nn.Linear``)."""
    shapes = {}
    for name in LAYERS:
        module = _layer(net, name)
        out_features = module.weight.shape[0]
        weight = module.weight.shape if name.startswith("conv") else (out_features, module.weight[0].numel())
        shapes[f"{name}.weight"] = tuple(weight)
        shapes[f"{name}.bias"] = (out_features,)
    return shapes


def _assign(net: SourceNetwork, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy a complete ``vgg_face_dag``-layout state dict into ``net``; every key present and every shape equal."""
    expected = expected_shapes(net)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise KeyError(f"VGG-Face weights {path}: missing keys {missing}, unexpected keys {unexpected}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"VGG-Face weights {path}: {key} has shape {tuple(tensors[key].shape)}, expected {shape}")
    with torch.no_grad():
        for name in LAYERS:
            module = _layer(net, name)
            module.weight.copy_(tensors[f"{name}.weight"].reshape(module.weight.shape))
            module.bias.copy_(tensors[f"{name}.bias"])


def read_vgg_face_dag(path: Path) -> dict[str, torch.Tensor]:
    """The ``vgg_face_dag`` PyTorch state dict, as stored."""
    state = load_tensors(path, "a VGG-Face (vgg_face_dag) state dict")
    if not isinstance(state, dict):
        raise ValueError(f"VGG-Face weights {path}: expected a state dict, got {type(state).__name__}")
    return {k: v.float() for k, v in state.items()}


def _h5_layer_weights(path: Path, layer_group, layer: str) -> dict[str, np.ndarray]:
    """``{"kernel": ..., "bias": ...}`` of one Keras layer group, by its ``weight_names`` attribute."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer_group.attrs.get("weight_names", [])]
    if not names:  # no Keras metadata: take every dataset under the layer's group
        layer_group.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    found = {}
    for wname in names:
        short = wname.rsplit("/", 1)[-1].split(":")[0]  # "conv1_1/kernel:0" -> "kernel"
        found[short] = np.asarray(layer_group[wname])
    for short in ("kernel", "bias"):
        if short not in found:
            raise KeyError(f"VGG-Face weights {path}: layer {layer!r} has no '{short}:0' weight (found {names})")
    return found


def read_keras_vggface_h5(path: Path, pool5_shape: tuple[int, int, int] = (512, 7, 7)) -> dict[str, torch.Tensor]:
    """keras-vggface ``.h5`` weights converted to the ``vgg_face_dag`` layout (OIHW, RGB input, (C, H, W) fc6).

    ``pool5_shape`` is (C, H, W) of the map ``fc6`` reads; Keras flattened it as (H, W, C).
    """
    import h5py

    out: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        listed = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", list(root))]
        for layer in LAYERS:
            if layer not in listed or layer not in root:
                raise KeyError(f"VGG-Face weights {path}: Keras layer {layer!r} not found (layers: {listed})")
            w = _h5_layer_weights(path, root[layer], layer)
            kernel = torch.from_numpy(w["kernel"]).float()
            if layer.startswith("conv"):
                kernel = kernel.permute(3, 2, 0, 1) if kernel.ndim == 4 else kernel  # HWIO -> OIHW
                if layer == LAYERS[0] and kernel.ndim == 4:
                    kernel = kernel.flip(1)  # keras-vggface takes BGR input; ours is RGB
            else:
                kernel = kernel.t()  # (in, out) -> (out, in)
                c, h, wd = pool5_shape
                if layer == "fc6" and kernel.shape[1] == c * h * wd:  # columns (H, W, C) -> (C, H, W)
                    kernel = kernel.reshape(-1, h, wd, c).permute(0, 3, 1, 2).reshape(-1, c * h * wd)
            out[f"{layer}.weight"] = kernel.contiguous()
            out[f"{layer}.bias"] = torch.from_numpy(w["bias"]).float()
    return out


_READERS: dict[str, Callable[[Path], dict[str, torch.Tensor]]] = {
    ".pth": read_vgg_face_dag,
    ".pt": read_vgg_face_dag,
    ".h5": read_keras_vggface_h5,
    ".hdf5": read_keras_vggface_h5,
}


def load_vggface_weights(net: SourceNetwork, path: str | Path) -> SourceNetwork:
    """Load VGG-Face weights from ``path`` into ``net`` (format from the suffix: ``.pth``/``.pt`` or ``.h5``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG-Face weights file {path} does not exist")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"VGG-Face weights {path}: unknown format {path.suffix!r}; expected one of {sorted(_READERS)}")
    _assign(net, reader(path), path)
    net.description = f"VGG-Face (VGG-16, 2622 identities), weights from {path}"
    return net


def vggface16(weights: str | Path | None = None) -> SourceNetwork:
    """VGG-Face (Parkhi et al., BMVC 2015); random weights for ``weights=None``, else read from the local file."""
    net = build_vggface16()
    if weights is not None:
        load_vggface_weights(net, weights)
    return net
