"""``metadata.json`` and the model card's class table of a bundle, from its spec."""

from typing import Dict

from rep3d_networks.bundles import deepedit
from rep3d_networks.bundles.recipe import ROI_SIZE, Config
from rep3d_networks.bundles.specs import DEEPEDIT_REFERENCES, METHOD_REFERENCES, VERSION, BundleSpec

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
# Versions the suite runs on: the pinned stack (requirements.txt, `make test`) and the newest one
# (requirements-latest.txt, `make test-latest`), lowest first; tests/test_bundles.py checks them against both files.
# ``monai_version`` and ``pytorch_version`` are the lowest: MONAI warns when the installed MONAI is older.
TESTED = {
    "monai": ["1.5.2", "1.6.1"],
    "torch": ["2.14.1", "2.15.0"],
    "pytorch-ignite": ["0.4.11", "0.5.5"],
    "monailabel": ["0.8.5"],
}
# Versions of requirements.txt's stack; every name is a PyPI package.
REQUIRED = {
    "nibabel": "5.4.2",
    "pytorch-ignite": TESTED["pytorch-ignite"][0],
    "tensorboard": "2.21.0",
    "scipy": "1.17.1",
}
DEEPEDIT_REQUIRED = {"scikit-image": "0.26.0"}
OPTIONAL = {
    "fire": "0.7.1",
    "matplotlib": "3.11.2",
    "monailabel": TESTED["monailabel"][0],
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
}
IMAGE = {
    "CT": ("hounsfield", "single channel CT volume, Hounsfield units"),
    "MRI": ("magnitude", "single channel MRI volume, MR signal intensity"),
}
MARKER = "<!-- rendered by `python -m rep3d_networks.bundles render` from rep3d_networks/data/specs.py: {} -->"


def input_channels(spec: BundleSpec) -> Dict[str, str]:
    """``channel_def`` of the input: the image, plus one guidance channel per DeepEdit label."""
    channels = {"0": "image"}
    if spec.deepedit:
        for index, name in enumerate(deepedit.label_names(spec.data), start=1):
            channels[str(index)] = f"{name} clicks (guidance)"
    return channels


def texts(spec: BundleSpec) -> Dict[str, str]:
    """``name``, ``task``, ``description`` and ``changelog`` entry."""
    if not spec.deepedit:
        return {
            "name": spec.title,
            "task": f"Segmentation of {spec.target} with Rep3D",
            "description": "Rep3D (21x21x21 depthwise kernels re-weighted during training by a learnable "
            "receptive-field "
            f"mask, folded away for inference) for segmentation of {spec.target}. Trained from scratch with "
            "the recipe of the Rep3D paper (appendix A.2). No trained weights are published yet.",
            "changelog": "initial release: Rep3D (LRBM) network with the paper's training recipe; no trained weights "
            "published yet",
        }
    channels = len(input_channels(spec))
    return {
        "name": f"{spec.title} with clicks (DeepEdit)",
        "task": f"Interactive (click-guided) and automatic segmentation of {spec.target} with Rep3D (DeepEdit)",
        "description": "Interactive, click-guided Rep3D (DeepEdit): the network gets the CT plus one guidance "
        "channel per "
        f"label (Gaussian-smoothed user clicks), {channels} input channels, and predicts the same classes as "
        f"the '{spec.base}' bundle. Trained as DeepEdit: a share of iterations without clicks (automatic "
        "mode) and the rest with clicks simulated from the prediction's errors (monai.apps.deepedit). Serve "
        "it with the MONAI Label app apps/rep3d (type deepedit) to segment with clicks in 3D Slicer. No "
        "trained weights are published yet.",
        "changelog": f"initial release: click-guided (DeepEdit) Rep3D on the {spec.base} recipe; no trained weights "
        "published yet",
    }


def patch_format(num_channels: int, channel_def: Dict[str, str], **kind: str) -> Config:
    return {
        **kind,
        "num_channels": num_channels,
        "spatial_shape": list(ROI_SIZE),
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": True,
        "channel_def": channel_def,
    }


def metadata(spec: BundleSpec) -> Config:
    """``configs/metadata.json`` (MONAI's meta schema 20240725)."""
    data, text = spec.data, texts(spec)
    image_format, image_classes = IMAGE[data.modality]
    classes = dict(enumerate(data.class_names))
    required = {**REQUIRED, **(DEEPEDIT_REQUIRED if spec.deepedit else {})}
    optional = {k: v for k, v in OPTIONAL.items() if not spec.deepedit or not k.startswith("onnx")}
    channels = input_channels(spec)
    references = list(METHOD_REFERENCES) + [spec.dataset_reference]
    if spec.deepedit:
        references += list(DEEPEDIT_REFERENCES)
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "changelog": {VERSION: text["changelog"]},
        "monai_version": TESTED["monai"][0],
        "pytorch_version": TESTED["torch"][0],
        "numpy_version": "1.26.4",
        "required_packages_version": required,
        "optional_packages_version": optional,
        "tested_versions": TESTED,
        "supported_apps": {"monailabel": TESTED["monailabel"][-1]},
        "name": text["name"],
        "task": text["task"],
        "description": text["description"],
        "authors": "Rep3D-MONAI developers (implementation); Ho Hin Lee et al. (method)",
        "copyright": "Copyright (c) Rep3D-MONAI developers",
        "data_source": spec.data_source,
        "data_type": "nibabel",
        "image_classes": image_classes,
        "label_classes": "; ".join(f"{i} = {name}" for i, name in classes.items()),
        "pred_classes": f"{len(classes)} channels (softmax logits), "
        + ", ".join(f"{i}: {n}" for i, n in classes.items()),
        "intended_use": "Research only. Not for clinical use: no trained weights are published and the model is not "
        "validated for diagnosis.",
        "references": references,
        "network_data_format": {
            "inputs": {
                "image": patch_format(
                    len(channels), channels, type="image", format=image_format, modality=data.modality
                )
            },
            "outputs": {
                "pred": patch_format(
                    len(classes), {str(i): n for i, n in classes.items()}, type="image", format="segmentation"
                )
            },
        },
    }


def class_table(spec: BundleSpec) -> str:
    """The model card's class table (markdown, between the two :data:`MARKER` lines)."""
    if spec.deepedit:
        rows = ["| guidance channel | label name | output channel / label value |", "|---|---|---|"]
        rows += [
            f"| {k} | {name} | {value} |"
            for k, (name, value) in enumerate(deepedit.label_names(spec.data).items(), start=1)
        ]
    else:
        rows = ["| channel | class |", "|---|---|"] + [f"| {i} | {n} |" for i, n in enumerate(spec.data.class_names)]
    return "\n".join([MARKER.format("class table"), *rows, MARKER.format("end of class table")])
