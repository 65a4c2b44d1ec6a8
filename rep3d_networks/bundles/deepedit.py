"""The DeepEdit overlay of the recipe: click-guided versions of ``train.json`` and ``inference.json``.

The network gets the image plus one guidance channel per label (Gaussian-smoothed clicks, ``monai.apps.deepedit``);
training alternates automatic iterations and iterations with clicks simulated from the prediction's errors.
Everything else is the automatic recipe of :mod:`rep3d_networks.bundles.recipe`.
"""

from typing import Any, Dict, List

from rep3d_networks.bundles.recipe import Config, target
from rep3d_networks.data.specs import DatasetSpec

IN_CHANNELS = "$@number_intensity_ch + len(@label_names)"


def label_names(data: DatasetSpec) -> Dict[str, int]:
    """``{name: label value}``, DeepEdit's convention: background included, listed last."""
    ids = data.label_ids
    return {**{k: v for k, v in ids.items() if v != 0}, data.class_names[0]: 0}


def with_keys(config: Config, after: str, new: Config) -> Config:
    """``config`` with ``new`` inserted right after the key ``after`` (keys of ``new`` already there are replaced)."""
    out: Config = {}
    for key, value in config.items():
        if key not in new:
            out[key] = value
        if key == after:
            out.update(new)
    return out


def inserted(items: List[Any], after_target: str, new: List[Any]) -> List[Any]:
    """``items`` with ``new`` inserted after the component whose ``_target_`` is ``after_target``."""
    index = next(i for i, item in enumerate(items) if isinstance(item, dict) and item.get("_target_") == after_target)
    return items[: index + 1] + new + items[index + 1 :]


def guidance_signal() -> Config:
    return target(
        "AddGuidanceSignalDeepEditd",
        keys="image",
        guidance="guidance",
        number_intensity_ch="@number_intensity_ch",
        sigma="@guidance_sigma",
    )


def class_keys(data: DatasetSpec) -> Config:
    """Replaces ``num_classes``: the labels, the image channels and the click width."""
    return {
        "label_names": label_names(data),
        "number_intensity_ch": 1,
        "num_classes": "$len(@label_names)",
        "guidance_sigma": 3,
    }


def interaction(probability: str, train: bool) -> Config:
    return target(
        "monai.apps.deepedit.interaction.Interaction",
        deepgrow_probability=probability,
        transforms="@train#click_transforms",
        click_probability_key="probability",
        train=train,
        label_names="@label_names",
        max_interactions="@max_interactions",
    )


def click_transforms() -> Config:
    """Simulated clicks from the prediction's errors, between the interaction's forward passes."""
    return target(
        "Compose",
        transforms=[
            target("Activationsd", keys="pred", softmax=True),
            target("AsDiscreted", keys="pred", argmax=True),
            target("ToNumpyd", keys=["image", "label", "pred"]),
            target("FindDiscrepancyRegionsDeepEditd", keys="label", pred="pred", discrepancy="discrepancy"),
            target(
                "AddRandomGuidanceDeepEditd",
                keys="NA",
                guidance="guidance",
                discrepancy="discrepancy",
                probability="probability",
            ),
            guidance_signal(),
            target("ToTensord", keys=["image", "label"]),
            target("rep3d_networks.deepedit.GuidanceListsd", keys="guidance"),  # last: what the next round collates
        ],
    )


def train(base: Config, data: DatasetSpec) -> Config:
    """``train.json`` of a DeepEdit bundle from the automatic one."""
    config = with_keys(base, "datalist", class_keys(data))
    config = with_keys(
        config,
        "num_samples",
        {"num_samples": 1, "deepgrow_probability_train": 0.4, "deepgrow_probability_val": 1.0, "max_interactions": 1},
    )
    config["network_def"] = {**base["network_def"], "in_channels": IN_CHANNELS}
    section = dict(base["train"])
    section["deterministic_transforms"] = inserted(
        section["deterministic_transforms"],
        "rep3d_networks.transforms.ValidateVolumed",
        [target("rep3d_networks.deepedit.LabelNamesd", keys="label", label_names="@label_names")],
    )
    guidance = [
        target("FindAllValidSlicesMissingLabelsd", keys="label", sids="sids"),
        target("AddInitialSeedPointMissingLabelsd", keys="label", guidance="guidance", sids="sids"),
        guidance_signal(),
        target("EnsureTyped", keys=["image", "label"]),
        target("SelectItemsd", keys=["image", "label", "guidance", "label_names"]),
    ]
    section = with_keys(section, "random_transforms", {"guidance_transforms": guidance})
    section["preprocessing"] = target(
        "Compose", transforms="$@train#deterministic_transforms + @train#random_transforms + @train#guidance_transforms"
    )
    section = with_keys(
        section,
        "inferer",
        {"click_transforms": click_transforms(), "iteration_update": interaction("@deepgrow_probability_train", True)},
    )
    section["trainer"] = {**section["trainer"], "iteration_update": "@train#iteration_update"}
    config["train"] = section
    validate = dict(base["validate"])
    validate["preprocessing"] = target(
        "Compose", transforms="$@train#deterministic_transforms + @train#guidance_transforms"
    )
    validate = with_keys(validate, "inferer", {"iteration_update": interaction("@deepgrow_probability_val", False)})
    validate["evaluator"] = {**validate["evaluator"], "iteration_update": "@validate#iteration_update"}
    config["validate"] = validate
    return config


def inference(base: Config, data: DatasetSpec) -> Config:
    """``inference.json`` of a DeepEdit bundle: ``--clicks "{'liver': [[i, j, k]]}"`` (voxel indices), or none."""
    config = with_keys(base, "num_workers", {**class_keys(data), "clicks": {}})
    config["imports"] = [i for i in base["imports"] if i != "$import copy"]  # no ensemble overlay
    config["network_def"] = {**base["network_def"], "in_channels": IN_CHANNELS}
    # The body crop of training and validation stays (without it the network sees the air outside the body, which
    # training never shows it: the phantom's DeepEdit Rep3D scored 0.50 without clicks served, 0.85 validated);
    # GuidanceToImageGridd maps the clicks through the affines, the crop's offset included, after it.
    transforms = inserted(
        base["preprocessing"]["transforms"],
        "rep3d_networks.transforms.ValidateVolumed",
        [target("AddGuidanceFromPointsDeepEditd", ref_image="image", guidance="guidance", label_names="@label_names")],
    )
    transforms = inserted(
        transforms,
        "CropForegroundd",
        [target("rep3d_networks.deepedit.GuidanceToImageGridd", keys="guidance", ref_image="image"), guidance_signal()],
    )
    config["preprocessing"] = target("Compose", transforms=transforms)
    config["dataset"] = {**base["dataset"], "data": "$[{'image': os.path.normpath(i), **@clicks} for i in @datalist]"}
    return config
