"""The click-guided (DeepEdit) Rep3D bundles ``bundles/amos_ct_deepedit`` and ``bundles/kits_deepedit`` (issue #9).

Bundle files and labels, the click geometry (``rep3d_networks.deepedit.GuidanceToImageGridd``) and inference with
clicks through ``monai.bundle run``. Training and the MONAI Label app are in ``tests/test_deepedit_app.py``.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_helpers import CT, TINY, TINY_INFERENCE, save_random_weights, write_overrides
from bundle_helpers import REPO_ROOT, check_label_matches_image, copy_bundle, make_dataset, run_bundle
from monai.apps.deepedit.transforms import AddGuidanceFromPointsDeepEditd
from monai.bundle import ConfigParser, verify_metadata
from monai.transforms import Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from rep3d_networks.deepedit import GuidanceListsd, GuidanceToImageGridd, map_points

DEEPEDIT_BUNDLES = {"amos_ct_deepedit": "amos_ct", "kits_deepedit": "kits"}  # -> the bundle with the same classes


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def output_classes(bundle: str) -> dict:
    """``{name: value}`` of a bundle's output channels (background included)."""
    metadata = read_json(REPO_ROOT / "bundles" / bundle / "configs" / "metadata.json")
    return {
        name: int(value) for value, name in metadata["network_data_format"]["outputs"]["pred"]["channel_def"].items()
    }


@pytest.mark.parametrize("name", DEEPEDIT_BUNDLES)
def test_bundle_files_metadata_and_labels(name, bundle_schema):
    """Zoo-style files; label_names = the classes of the automatic bundle; one guidance channel per label."""
    root = REPO_ROOT / "bundles" / name
    for f in [
        "configs/train.json",
        "configs/inference.json",
        "configs/metadata.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        "large_files.yml",
    ]:
        assert (root / f).is_file(), f
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(bundle_schema))
    classes = output_classes(DEEPEDIT_BUNDLES[name])
    assert output_classes(name) == classes
    metadata = read_json(root / "configs" / "metadata.json")
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == len(image["channel_def"]) == 1 + len(classes)
    for config in ["train.json", "inference.json"]:
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / config))
        assert parser["label_names"] == classes and list(parser["label_names"])[-1] == "background"
        assert parser.get_parsed_content("network_def#in_channels") == 1 + len(classes)
        assert parser.get_parsed_content("num_classes") == len(classes)
    train = read_json(root / "configs" / "train.json")
    assert train["train"]["trainer"]["iteration_update"] == "@train#iteration_update"
    assert train["validate"]["evaluator"]["iteration_update"] == "@validate#iteration_update"


def write_oblique_phantom(path: Path, bright_voxel) -> np.ndarray:
    """A volume stored LPI with permuted axes (not RAS) and anisotropic voxels: a body (a box away from every
    border, so that a foreground crop moves the grid's origin) bright at one voxel inside it."""
    affine = np.array([[0.0, -2.0, 0.0, 40.0], [-1.5, 0.0, 0.0, 30.0], [0.0, 0.0, -3.0, 20.0], [0, 0, 0, 1.0]])
    volume = np.zeros((30, 20, 12), np.float32)
    volume[4:27, 3:16, 2:11] = 100.0
    volume[tuple(bright_voxel)] = 1000.0
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return affine


def most_common_organ(label) -> int:
    values, counts = np.unique(np.asarray(label), return_counts=True)
    return int(values[values > 0][np.argmax(counts[values > 0])])


@pytest.mark.latest_stack
def test_training_keeps_the_label_values_and_label_names(tmp_path):
    """The DeepEdit training transforms keep the file's label values (MONAI 1.6's ``NormalizeLabelsInDatasetd``
    renumbers them alphabetically) and a ``label_names`` of the bundle's classes only (MONAI 1.6's ``Spacingd``
    copied the NIfTI header into it and the click transforms failed)."""
    data_dir = make_dataset("amos_ct", "phantom", tmp_path / "data")
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "amos_ct_deepedit" / "configs" / "train.json"))
    parser["pixdim"] = [4.0, 4.0, 4.0]
    image = sorted((data_dir / "imagesTr").glob("*.nii.gz"))[0]
    label = data_dir / "labelsTr" / image.name
    transforms = parser.get_parsed_content("train#deterministic_transforms") + parser.get_parsed_content(
        "train#guidance_transforms"
    )
    data = Compose(transforms)({"image": str(image), "label": str(label)})
    assert data["label_names"] == parser["label_names"]
    assert most_common_organ(data["label"]) == most_common_organ(nib.load(str(label)).dataobj) == 6  # the liver


def test_clicks_follow_orientation_resampling_and_the_body_crop(tmp_path):
    """A click on a voxel of the file lands on that voxel's position after ``Orientationd``, ``Spacingd`` and the
    inference's foreground crop (``CropForegroundd``, which moves the grid's origin)."""
    click = [22, 5, 9]
    write_oblique_phantom(tmp_path / "phantom.nii.gz", click)
    pipeline = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            AddGuidanceFromPointsDeepEditd(
                ref_image="image", guidance="guidance", label_names={"organ": 1, "background": 0}
            ),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="nearest"),
            CropForegroundd("image", source_key="image"),
            GuidanceToImageGridd("guidance", ref_image="image"),
        ]
    )
    data = pipeline({"image": str(tmp_path / "phantom.nii.gz"), "organ": [click], "background": [[-50, 0, 0]]})
    uncropped = Compose(pipeline.transforms[:-2])({"image": str(tmp_path / "phantom.nii.gz")})["image"]
    assert all(c < u for c, u in zip(data["image"].shape[1:], uncropped.shape[1:]))  # the crop moved the origin
    bright = np.argwhere(np.asarray(data["image"][0]) > 500)
    assert len(bright) > 0
    distance = np.min(np.abs(bright - np.asarray(data["guidance"]["organ"][0])).max(axis=1))
    assert distance <= 1, (data["guidance"], bright)
    assert data["guidance"]["background"] == []  # outside the image: dropped, not clamped onto the border


def test_click_becomes_its_labels_guidance_channel_at_the_clicked_position(shared_data):
    """The bundle's inference preprocessing (default 1.5 x 1.5 x 2 mm grid) on the real CT, as the app runs it.

    The network input has the image and one channel per label; a liver click appears only in the liver channel,
    peaking at the clicked voxel's world position.
    """
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "amos_ct_deepedit" / "configs" / "inference.json"))
    click = [86, 47, 20]
    data = parser.get_parsed_content("preprocessing")({"image": str(shared_data / CT), "liver": [click], "spleen": []})
    image = data["image"]
    names = list(parser["label_names"])
    assert image.shape[0] == 1 + len(names)
    liver = 1 + names.index("liver")
    guidance = np.asarray(image[1:])
    assert guidance[liver - 1].max() == pytest.approx(1.0)
    assert not np.delete(guidance, liver - 1, axis=0).any()
    peak = np.unravel_index(np.argmax(guidance[liver - 1]), guidance.shape[1:])
    world_peak = np.asarray(image.affine) @ [*peak, 1.0]
    world_click = np.asarray(image.meta["original_affine"]) @ [*click, 1.0]
    assert np.linalg.norm(world_peak[:3] - world_click[:3]) <= 2.0  # within one voxel of the 1.5 x 1.5 x 2 mm grid


def test_map_points_is_the_affine_round_trip():
    source = np.diag([2.0, 3.0, 4.0, 1.0])
    target = np.diag([1.0, 1.0, 1.0, 1.0])
    target[:3, 3] = [-2.0, 0.0, 4.0]
    np.testing.assert_allclose(map_points([[1, 2, 3]], source, target), [[4.0, 6.0, 8.0]])


GUIDANCE_ROUNDS = [  # clicks after one simulated round (lists, or what an earlier collation left) -> clicks kept
    ({"liver": [], "spleen": [[1, 2, 3, 4]]}, {"liver": [], "spleen": [[1, 2, 3, 4]]}),
    ({"liver": [], "spleen": []}, {"liver": [], "spleen": []}),  # bare, collation turns this dict into "liver"
    ({"liver": None, "spleen": np.array([[5, 6, 7, 8]])}, {"liver": [], "spleen": [[5, 6, 7, 8]]}),
    ("liver", {"liver": [], "spleen": []}),  # the dict an earlier collation collapsed
]


@pytest.mark.parametrize("clicks, kept", GUIDANCE_ROUNDS)
def test_guidance_lists_survive_interaction_rounds(clicks, kept):
    """What MONAI's ``Interaction`` does between click rounds (collate, decollate) after ``GuidanceListsd``: one item
    comes back with its prediction and every label's clicks, in the JSON form MONAI's click transforms read."""
    from monai.data import decollate_batch, list_data_collate

    item = {"guidance": clicks, "label_names": {"liver": 1, "spleen": 2}, "pred": torch.zeros(1, 4, 4, 4)}
    batch = list_data_collate([GuidanceListsd(keys="guidance")(item)])
    (round_trip,) = decollate_batch(batch, detach=True)
    assert round_trip["pred"].shape == (1, 4, 4, 4)
    assert {name: json.loads(text) for name, text in round_trip["guidance"].items()} == kept


def test_guidance_lists_needed_between_rounds():
    """Without ``GuidanceListsd`` the same round trip loses the clicks and the batch (what failed real-CT training)."""
    from monai.data import decollate_batch, list_data_collate

    item = {"guidance": {"liver": [], "spleen": []}, "pred": torch.zeros(1, 4, 4, 4)}
    items = decollate_batch(list_data_collate([item]), detach=True)
    assert [i["guidance"] for i in items] == ["liver", "spleen"]  # one "item" per label name
    assert items[1]["pred"] is None


CLI_CLICKS = {  # bundle -> (clicks, a label of the other bundle at the same point)
    "amos_ct_deepedit": ({"liver": [[86, 47, 20]], "background": [[30, 60, 10]]}, "tumor"),
    "kits_deepedit": ({"kidney": [[30, 40, 12]], "background": [[30, 60, 10]]}, "liver"),
}


@pytest.mark.parametrize("name", CLI_CLICKS)
def test_inference_with_clicks_through_monai_bundle(name, tmp_path, shared_data):
    """``python -m monai.bundle run --config_file configs/inference.json --clicks {...}`` (random tiny weights).

    Clicks change the result, and a label name the model does not have is ignored.
    """

    bundle = copy_bundle(name, tmp_path / "bundles")
    write_overrides(bundle / "configs" / "train.json", TINY)
    save_random_weights(bundle, seed=3)
    image = shared_data / CT
    clicks, foreign_label = CLI_CLICKS[name]
    point = next(iter(clicks.values()))

    def infer(clicks: dict, out: str) -> np.ndarray:
        run_bundle(
            bundle,
            ["inference.json"],
            datalist=[str(image)],
            output_dir=str(tmp_path / out),
            clicks=clicks,
            **TINY,
            **TINY_INFERENCE,
            num_workers=0,
        )
        written = list((tmp_path / out).rglob("*_seg.nii.gz"))
        assert len(written) == 1, written
        check_label_matches_image(written[0], image, len(output_classes(name)))
        return np.asarray(nib.load(str(written[0])).dataobj)

    automatic = infer({}, "auto")
    clicked = infer(clicks, "clicked")
    foreign = infer({foreign_label: point}, "foreign")  # not an input of this model
    assert not np.array_equal(automatic, clicked)
    np.testing.assert_array_equal(automatic, foreign)
