"""The built-in plugins, declared without importing them: each by its target (``package.module:attribute``,
imported on first use) and a one-line description, so that listing them (``etlbench list``) needs no torch.

Free of heavy imports (nothing of etlbench either): :mod:`etlbench.registry` declares these in its registries.
A new built-in is one line here; its module does not register itself (no decorator), and
``tests/test_registry.py`` checks that every target loads, is of the right kind and describes itself.
Third-party plugins register with the decorators or entry points instead (see :mod:`etlbench.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Builtin:
    """A built-in plugin: where it lives and what ``etlbench list`` says of it."""

    target: str  # "package.module:attribute"
    description: str
    metric: str = ""  # tasks: their metric, as ``Task.describe()`` states it (listing them needs no import)


BACKBONES: dict[str, Builtin] = {
    "dlib-resnet29": Builtin("etlbench.backbones.dlib_resnet:dlib_resnet29",
                             "dlib face-recognition ResNet-29 (real weights from face-recognition-models; 128-d "
                             "descriptor)"),
    "mobilefacenet": Builtin("etlbench.backbones.mobilefacenet:mobilefacenet",
                             "MobileFaceNet trained on CASIA-WebFace (local checkpoint; 128-d embedding)"),
    "timm/": Builtin("etlbench.backbones.timm_backbone:timm_backbone",
                     "any timm model, e.g. timm/resnet18 (random weights, or weights=<local file>)"),
    "vggface16": Builtin("etlbench.backbones.vggface:vggface16",
                         "VGG-Face (VGG-16, 2622 identities; the ETL paper's source network); weights from a local "
                         "file"),
}

TASKS: dict[str, Builtin] = {
    "head_pose": Builtin("etlbench.tasks.face:HeadPose",
                         "yaw/pitch/roll regression; mean MAE in degrees on the +/-99 deg subset",
                         "mae_deg (lower is better); labels 'pose'; default dataset aflw2000"),
    "emotion": Builtin("etlbench.tasks.face:Emotion", "7-class facial expression; accuracy (and macro-F1)",
                       "accuracy (higher is better); labels 'label'; default dataset fer2013"),
    "age": Builtin("etlbench.tasks.face:Age", "age regression in years; MAE",
                   "mae_years (lower is better); labels 'age'; default dataset utkface"),
    "gender": Builtin("etlbench.tasks.face:Gender", "binary gender (0 male, 1 female); accuracy",
                      "accuracy (higher is better); labels 'gender'; default dataset utkface"),
    "verification": Builtin("etlbench.tasks.face:Verification",
                            "face verification on pairs (LFW protocol), the embedding as head, contrastive training; "
                            "accuracy, AUC, TAR at FAR 1e-3",
                            "accuracy (higher is better); labels 'identity'; default dataset lfw_pairs"),
    "verification_reverse": Builtin("etlbench.tasks.face:VerificationReverse",
                                    "verification's other half of the two-half protocol: folds 5-8 train, 9 "
                                    "validates, 0-4 test",
                                    "accuracy (higher is better); labels 'identity'; default dataset lfw_pairs"),
}

#: Append-only: a method's place here is its colour and marker in every figure (report.figures.method_style).
METHODS: dict[str, Builtin] = {
    "etl": Builtin("etlbench.methods.etl:ETL",
                   "Cross-task-aware filter selection from linear probes of the frozen source network (John et al., "
                   "VISAPP 2022)."),
    "magnitude": Builtin("etlbench.methods.baselines:Magnitude",
                         'L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).'),
    "taylor": Builtin("etlbench.methods.baselines:Taylor",
                      "First-order Taylor importance ``(sum over a filter of grad * weight)^2``, gradients of the task "
                      'loss accumulated over ``batches`` training batches (Molchanov et al., "Importance Estimation '
                      'for Neural Network Pruning", CVPR 2019; "Pruning CNNs for Resource Efficient Inference", '
                      "ICLR 2017)."),
    "random": Builtin("etlbench.methods.baselines:Random",
                      "Random filter scores (seeded per layer and trial seed): the floor any criterion must beat."),
    "l2": Builtin("etlbench.methods.group_criteria:GroupL2",
                  "Group L2 norm of every weight a channel owns across its coupled layers (Torch-Pruning's "
                  '``GroupMagnitudeImportance``; Fang et al., "DepGraph", CVPR 2023; after Li et al., ICLR 2017).'),
    "fpgm": Builtin("etlbench.methods.group_criteria:FPGM",
                    "Filter pruning via the geometric median: filters closest to the others are redundant (He et al., "
                    "CVPR 2019; Torch-Pruning's ``FPGMImportance``)."),
    "lamp": Builtin("etlbench.methods.group_criteria:LAMP",
                    "Layer-adaptive magnitude-based pruning: each squared magnitude over the sum of those not smaller "
                    "in its group (Lee et al., ICLR 2021; Torch-Pruning's ``LAMPImportance``)."),
    "hessian": Builtin("etlbench.methods.group_criteria:Hessian",
                       "Group Optimal Brain Damage: ``w^2`` times the Hessian's diagonal, summed over a channel's "
                       "group (LeCun et al., NeurIPS 1989; Torch-Pruning's ``GroupHessianImportance``), the diagonal "
                       "estimated as the empirical Fisher of ``samples`` training images."),
    "uniform": Builtin("etlbench.methods.controls:Uniform",
                       "Control: every prunable layer thinned by the same fraction, keeping its first channels and "
                       "their weights (no criterion: a uniform width multiplier applied to the transfer baseline)."),
    "scratch": Builtin("etlbench.methods.controls:Scratch",
                       "Control: the architecture method ``of`` produces at the budget (with its default parameters), "
                       're-initialised (seeded) and trained with the same recovery (Liu et al., "Rethinking the Value '
                       'of Network Pruning", ICLR 2019).'),
    "bn-scale": Builtin("etlbench.methods.group_criteria:BNScale",
                        "The scale (|gamma|) of each channel's batch norm (Liu et al., \"Network Slimming\", "
                        "ICCV 2017; Torch-Pruning's ``BNScaleImportance``)."),
    "etl-cut-uniform": Builtin("etlbench.methods.etl:ETLCutUniform",
                               "ETL ablation: ETL's depth rule (probes of the frozen source), then criterion-free "
                               "uniform width to the budget (each layer keeps its first channels): what the cut alone "
                               "is worth."),
    "etl-cut-taylor": Builtin("etlbench.methods.etl:ETLCutTaylor",
                              "ETL ablation: ETL's depth rule, then Taylor's criterion (head fitted as the probe of "
                              "the truncated trunk) instead of the probes' coefficients: whether ETL's filter scores "
                              "beat a strong criterion after the same cut."),
    "etl-transfer": Builtin("etlbench.methods.etl:ETLOnTransfer",
                            "ETL ablation: ETL's probes, cut and filter scores read from the transfer-learned trunk "
                            "instead of the frozen source (and the pruned model cut from it): whether probing before "
                            "transfer learning loses anything."),
    "hrank": Builtin("etlbench.methods.feature_maps:HRank",
                     "Average rank of a channel's feature maps (after the activation) over ``samples`` training "
                     'images (Lin et al., "HRank: Filter Pruning using High-Rank Feature Map", CVPR 2020).'),
    "fisher": Builtin("etlbench.methods.feature_maps:GroupFisher",
                      "Group Fisher: the loss increase of masking a channel (one mask per coupled group) over what "
                      'removing it saves, from ``samples`` training images (Liu et al., "Group Fisher Pruning for '
                      'Practical Network Compression", ICML 2021).'),
    "obdc": Builtin("etlbench.methods.group_criteria:OBDC",
                    "OBD with the exact per-sample empirical Fisher diagonal, from ``batches`` training batches (the "
                    '``fisher_diag`` criterion of the code of Wang et al., "EigenDamage: Structured Pruning in the '
                    "Kronecker-Factored Eigenbasis\", ICML 2019; Torch-Pruning's ``OBDCImportance``)."),
}

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset's distribution that may be fetched by script: its pinned URL and MD5. ``variant``: one
    of several alternatives (``etlbench data download --variant``; the first is the default), "" for always."""

    url: str
    md5: str
    variant: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in canonical format at ``relative_path`` under the data root (``None``: generated).

    ``converter`` (``package.module:function``, imported on use) makes that file from the dataset's usual
    distribution (``etlbench data prepare``); ``downloads`` are the files ``etlbench data download`` may fetch
    (only where the terms allow a scripted download); ``obtain`` says where to get the source by hand otherwise."""

    name: str
    relative_path: str | None
    tasks: tuple[str, ...]
    description: str
    converter: str | None = None
    downloads: tuple[RemoteFile, ...] = ()
    obtain: str = ""

    def path(self, root: Path) -> Path:
        return root / self.relative_path


_LFW = "http://vis-www.cs.umass.edu/lfw/"  # URLs and MD5s as pinned by torchvision (torchvision/datasets/lfw.py)

# Datasets are plain records: the registry holds them as they are (nothing to import).
DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("aflw2000", "aflw2000_3d/aflw2000_64.npz", ("head_pose",),
                "AFLW2000-3D head pose (Zhu et al. CVPR 2016), 64 px RGB",
                converter="etlbench.prepare.aflw2000:convert",
                obtain="AFLW2000-3D.zip from the 3DDFA project page, "
                       "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm (research use only, "
                       "by hand: no scripted download). No published checksum is known; pass the zip itself (or "
                       "its AFLW2000/ folder) as --src"),
    DatasetSpec("fer2013", "fer2013/fer2013_48.npz", ("emotion",),
                "FER2013 facial expression (Goodfellow et al. 2013), 48 px gray, official splits",
                converter="etlbench.prepare.fer2013:convert",
                obtain="fer2013.tar.gz (holding fer2013/fer2013.csv) from the Kaggle challenge "
                       "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-"
                       "recognition-challenge (Kaggle login and accepting its rules: no scripted download). "
                       "MD5 of fer2013.csv as torchvision pins it: f8428a1edbd21e88f42c73edd2a14f95. The common "
                       "image-folder copy (train/<class>/Training_*.jpg, test/<class>/PublicTest_*.jpg and "
                       "PrivateTest_*.jpg) works too (it is what the staged file was made from); pass the csv, the "
                       "tar.gz, a zip or the folder as --src"),
    DatasetSpec("utkface", "utkface/utkface_64.npz", ("age", "gender"),
                "UTKFace age and gender (Zhang et al. CVPR 2017), 64 px RGB",
                converter="etlbench.prepare.utkface:convert",
                obtain="UTKFace.tar.gz, the \"Aligned&Cropped Faces\" set, from the Google Drive folder linked on "
                       "https://susanqq.github.io/UTKFace/ (non-commercial research only; Google Drive allows no "
                       "stable scripted download). No published checksum is known; pass the tar.gz (or the "
                       "folder of *.jpg.chip.jpg files) as --src"),
    DatasetSpec("lfw_pairs", "lfw_pairs/lfw_pairs_64.npz", ("verification", "verification_reverse"),
                "LFW View 2 verification pairs (Huang et al. 2007), 64 px gray",
                converter="etlbench.prepare.lfw:convert",
                downloads=(RemoteFile(_LFW + "lfw.tgz", "a17d05bd522c52d84eca14327a23d494", "original"),
                           RemoteFile(_LFW + "lfw-funneled.tgz", "1b42dfed7d15c9b2dd63d5e5840c86ad", "funneled"),
                           RemoteFile(_LFW + "lfw-deepfunneled.tgz", "68331da3eb755a505a502b5aacb3c201",
                                      "deepfunneled"),
                           RemoteFile(_LFW + "pairs.txt", "9f1ba174e4e1c508ff7cdf10ac338a7d")),
                obtain="the image archive and pairs.txt (View 2) from http://vis-www.cs.umass.edu/lfw/ "
                       "(`etlbench data download lfw_pairs` fetches them). The staged file was made from "
                       "grayscale, aligned images (LFW-a, Wolf et al.), which UMass does not serve: the other "
                       "variants give other pixels and another fingerprint"),
    DatasetSpec(SYNTHETIC, None, ("head_pose", "emotion", "age", "gender", "verification", "verification_reverse"),
                "procedural synthetic faces generated from the seed (the embedded default; not real data)"),
)
