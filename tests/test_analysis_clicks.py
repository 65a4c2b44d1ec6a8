"""The simulated annotator (``python -m rep3d_networks.analysis clicks``, issue #26) through the real server.

The click chooser is checked on small arrays. The command itself runs once, against one server (the app started as
README.md says) serving three scratch models whose networks are :class:`click_echo.ClickEcho` (no training needed):

* ``echo``: a copy of ``amos_ct_deepedit`` (type ``deepedit``) whose label is wherever its clicks are, so a correct
  annotator and correctly placed clicks make Dice rise with every click;
* ``deaf``: the same with the clicks ignored (all background): its curve is flat and must be flagged;
* ``auto``: a copy of the automatic ``amos_ct`` (type ``segmentation``), the control, asked once per organ.

The studies are the real CT and the same voxels stored in another orientation (axes permuted and flipped, as
``tests/test_deepedit.py``'s phantom), so that the app's ``Orientationd`` / ``Spacingd`` have to move the clicks.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_helpers import CT, SERVER_START_S, Server, amos_label, copy_app, make_tiny_bundle, write_overrides

from rep3d_networks.analysis.clicks import (
    BACKGROUND,
    FALSE,
    MISSED,
    check_organs,
    clicks_to_reach,
    next_click,
    read_reference,
    reference_files,
    served_models,
    voxel_spacing,
)
from rep3d_networks.analysis.clicks_report import FLAT_MARGIN, THRESHOLDS, curve_checks, step_changes, summarize
from rep3d_networks.data.specs import get_dataset_spec

TESTS = Path(__file__).resolve().parent
ORGANS = {name: get_dataset_spec("amos_ct").label_ids[name] for name in ("spleen", "right kidney")}
ABSENT = "esophagus"  # an AMOS label with no voxel in the sample CT's label
MAX_CLICKS = 3
STUDIES = {"ct_sm": None, "ct_sm_pli": ("P", "L", "I")}  # image id -> stored orientation (None: the file as it is)
MODELS = {"echo": ("amos_ct_deepedit", True), "deaf": ("amos_ct_deepedit", False), "auto": ("amos_ct", False)}
CLEAR_RISE = 0.2
COMMAND_S = 300


def box(shape, *corners) -> np.ndarray:
    """A boolean array, True in the boxes ``((start...), (stop...))``."""
    mask = np.zeros(shape, bool)
    for start, stop in corners:
        mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return mask


# One region: a 7-voxel cube joined by a one-voxel rod to a plate 5 voxels thick along axis 0 and 21 wide. With
# isotropic voxels the cube's centre is deepest (4 voxels in, the plate's 3); with 4 mm along axis 0 the plate's
# (11 mm).
CUBE = ((1, 1, 1), (8, 8, 8))
ROD = ((8, 1, 1), (10, 2, 2))
PLATE = ((10, 0, 0), (15, 21, 21))


@pytest.mark.parametrize(
    "reference, prediction, spacing, kind, voxel",
    [
        # nothing predicted: click the organ at the centre of the box
        (box((9, 9, 9), ((2, 2, 2), (7, 7, 7))), box((9, 9, 9)), (1, 1, 1), MISSED, (4, 4, 4)),
        # the organ fills the image: the border bounds it, the click is at the centre, not on a face
        (box((9, 9, 9), ((0, 0, 0), (9, 9, 9))), box((9, 9, 9)), (1, 1, 1), MISSED, (4, 4, 4)),
        # a false region (27 voxels) larger than the missed one (8): background click at the false region's centre
        (
            box((12, 12, 12), ((0, 0, 0), (2, 2, 2))),
            box((12, 12, 12), ((6, 6, 6), (9, 9, 9))),
            (1, 1, 1),
            FALSE,
            (7, 7, 7),
        ),
        # two missed regions: the larger one (27 voxels against 8)
        (
            box((12, 12, 12), ((0, 0, 0), (2, 2, 2)), ((6, 6, 6), (9, 9, 9))),
            box((12, 12, 12)),
            (1, 1, 1),
            MISSED,
            (7, 7, 7),
        ),
        # a 3 x 3 x 9 bar: of its equally deep voxels along the long axis, the middle one (not the first)
        (box((5, 5, 11), ((1, 1, 1), (4, 4, 10))), box((5, 5, 11)), (1, 1, 1), MISSED, (2, 2, 5)),
        # the cube-rod-plate region (see CUBE), in isotropic and in anisotropic voxels
        (box((16, 21, 21), CUBE, ROD, PLATE), box((16, 21, 21)), (1, 1, 1), MISSED, (4, 4, 4)),
        (box((16, 21, 21), CUBE, ROD, PLATE), box((16, 21, 21)), (4, 1, 1), MISSED, (12, 10, 10)),
    ],
    ids=["missed", "fills-image", "false-larger", "larger-of-two", "bar", "isotropic", "anisotropic"],
)
def test_next_click(reference, prediction, spacing, kind, voxel):
    click = next_click(reference, prediction, spacing, "liver")
    assert (click.region, click.label, click.voxel) == (kind, "liver" if kind == MISSED else BACKGROUND, voxel)
    assert (reference if kind == MISSED else prediction)[click.voxel]


def test_next_click_without_error_is_none():
    organ = box((6, 6, 6), ((1, 1, 1), (4, 4, 4)))
    assert next_click(organ, organ.copy(), (1, 1, 1), "liver") is None


def test_voxel_spacing_of_a_permuted_affine():
    affine = np.array([[0.0, -2.0, 0.0, 40.0], [-1.5, 0.0, 0.0, 30.0], [0.0, 0.0, -3.0, 20.0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(voxel_spacing(affine), [1.5, 2.0, 3.0])


@pytest.mark.parametrize(
    "curve, threshold, expected", [([0.1, 0.5, 0.86, 0.9], 0.85, 2), ([0.9, 0.5], 0.85, 0), ([0.1, 0.84], 0.85, None)]
)
def test_clicks_to_reach(curve, threshold, expected):
    assert clicks_to_reach(curve, threshold) == expected


def test_summary_noc_counts_never_reached_as_max_clicks():
    curves = [[0.5, 0.82, 0.88, 0.95], [0.9, 0.9, 0.9, 0.9], [0.1, 0.2, 0.3, 0.3]]
    call = {"clicks": 0, "client_s": 1.0, "server_s": None}
    records = [{"model": "m", "organ": "liver", "dice": c, "calls": [call]} for c in curves]
    results = {"max_clicks": 3, "models": {"m": {"type": "deepedit", "takes_clicks": True}}, "records": records}
    summary = summarize(results)["models"]["m"]
    assert summary["noc"] == {
        "0.80": {"mean": pytest.approx(4 / 3), "not_reached": pytest.approx(1 / 3)},
        "0.85": {"mean": pytest.approx(5 / 3), "not_reached": pytest.approx(1 / 3)},
        "0.90": {"mean": pytest.approx(2.0), "not_reached": pytest.approx(1 / 3)},
    }
    assert summary["curve"] == pytest.approx([0.5, 0.64, 0.6933333, 0.7166667])
    assert summary["seconds"] == {
        "no_clicks_client_s": 1.0,
        "per_click_client_s": None,
        "per_click_server_s": None,
        "calls": 3,
    }


@pytest.mark.parametrize(
    "takes_clicks, pairs, flat, falls, systematic",
    [
        (True, [[0.2, 0.5, 0.6]], False, [], []),
        (True, [[0.5, 0.505, 0.505]], True, [], []),
        (True, [[0.2, 0.6, 0.5, 0.7]], False, [2], [True]),  # one pair: any fall counts
        (
            True,
            [[0.5, 0.6, 0.59], [0.5, 0.6, 0.58], [0.5, 0.6, 0.585]],
            False,
            [2],
            [True],
        ),  # every pair a little worse
        (
            True,
            [[0.5, 0.6, 0.3], [0.5, 0.6, 0.65], [0.5, 0.6, 0.64], [0.5, 0.6, 0.6]],
            False,
            [2],
            [False],
        ),  # one bad click
        (False, [[0.5, 0.5]], None, [], []),
    ],
    ids=["rises", "flat", "falls", "falls_systematically", "falls_within_noise", "automatic"],
)
def test_curve_checks(takes_clicks, pairs, flat, falls, systematic):
    check = curve_checks({"m": pairs}, {"m": takes_clicks})["m"]
    assert check["flat"] is flat and [f["click"] for f in check["falls"]] == falls
    assert [f["systematic"] for f in check["falls"]] == systematic
    assert len(check["flags"]) == bool(flat) + len(falls)
    assert all(("a systematic fall" in m) == s for m, s in zip(check["flags"][bool(flat) :], systematic))


def test_step_changes_are_paired():
    steps = step_changes([[0.5, 0.7, 0.7], [0.5, 0.3, 0.3], [0.5, 0.6, 0.6]])
    assert [(s["click"], s["fell"], s["rose"], s["unchanged"]) for s in steps] == [(1, 1, 2, 0), (2, 0, 0, 3)]
    assert steps[0]["mean"] == pytest.approx(0.1 / 3)
    assert steps[0]["se"] == pytest.approx(np.std([0.2, -0.2, 0.1], ddof=1) / np.sqrt(3))


def test_bad_input_is_named(tmp_path):
    info = {
        "models": {"echo": {"type": "deepedit", "labels": {"background": 0, "liver": 6}}},
        "labels": ["liver", "background"],
    }
    with pytest.raises(ValueError, match="'nope'.*serves: echo"):
        served_models(info, ["nope"])
    with pytest.raises(ValueError, match="tumor.*model 'echo'"):
        check_organs(served_models(info, None), ["liver", "tumor"])
    with pytest.raises(ValueError, match="is not a folder"):
        reference_files(tmp_path / "missing", ["ct_sm"])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.uint8), np.eye(4)), str(tmp_path / "other.nii.gz"))
    with pytest.raises(ValueError, match=r"other.nii.gz \(id 'other'\).*images: ct_sm"):
        reference_files(tmp_path, ["ct_sm"])
    with pytest.raises(ValueError, match="other.nii.gz: expected a 3D label"):
        read_reference("other", tmp_path / "other.nii.gz")


def store_as(source: Path, axcodes, target: Path) -> Path:
    """The same voxels and world positions, stored with the array axes in ``axcodes`` order (``None``: a copy)."""
    image = nib.load(str(source))
    if axcodes is not None:
        transform = nib.orientations.ornt_transform(
            nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(axcodes)
        )
        image = image.as_reoriented(transform)
        assert nib.aff2axcodes(image.affine) == axcodes
    nib.save(image, str(target))
    return target


def echo_bundle(source: str, listen: bool, name: str, bundles: Path, scratch: Path) -> None:
    """A tiny copy of ``source`` named ``name`` whose network is :class:`click_echo.ClickEcho` (no parameters:
    an empty state dict is its ``models/model.pt``, so the app lists it as trained)."""
    bundle = Path(shutil.move(make_tiny_bundle(source, scratch / name, with_weights=False), bundles / name))
    config = TESTS.parent / "bundles" / "amos_ct_deepedit" / "configs" / "inference.json"
    label_names = json.loads(config.read_text())["label_names"]
    network = {
        "_target_": "click_echo.ClickEcho",
        "label_names": label_names,
        "number_intensity_ch": 1,
        "listen": listen,
    }
    write_overrides(bundle / "configs" / "inference.json", {"network_def": network})
    (bundle / "models").mkdir()
    torch.save({}, bundle / "models" / "model.pt")


@pytest.fixture(scope="module")
def measured(tmp_path_factory, shared_data, repo_root):
    """The clicks command run once against the served echo / deaf / auto models; yields (results JSON, stdout)."""
    root = tmp_path_factory.mktemp("analysis_clicks")
    bundles, studies, references = root / "bundles", root / "studies", root / "references"
    for folder in (bundles, studies, references):
        folder.mkdir()
    for name, (source, listen) in MODELS.items():
        echo_bundle(source, listen, name, bundles, root)
    label = amos_label(shared_data, root / "label.nii.gz")
    for image_id, axcodes in STUDIES.items():
        store_as(shared_data / CT, axcodes, studies / f"{image_id}.nii.gz")
        store_as(label, axcodes, references / f"{image_id}.nii.gz")
    conf = {"models": ",".join(MODELS), "bundles_dir": str(bundles), "device": "cpu"}
    python_path = os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)  # click_echo
    env = {"PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    server = Server(copy_app(repo_root, root / "app"), studies, conf, root, env)
    try:
        server.wait_until_up(SERVER_START_S)
        command = [
            sys.executable,
            "-m",
            "rep3d_networks.analysis",
            "clicks",
            "--server_url",
            server.url,
            "--references",
            str(references),
            "--output_dir",
            str(root / "out"),
            "--organs",
            ",".join([*ORGANS, ABSENT]),
            "--max_clicks",
            str(MAX_CLICKS),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=COMMAND_S, env=env)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{server.log_tail()}"
    finally:
        server.stop()
    for name in ("clicks.md", "clicks.png"):
        assert (root / "out" / name).stat().st_size > 0
    yield json.loads((root / "out" / "clicks.json").read_text()), run.stdout


def records(results: dict, model: str, image: str) -> list:
    found = [r for r in results["records"] if r["model"] == model and r["image"] == image]
    assert sorted(r["organ"] for r in found) == sorted(ORGANS)
    return found


@pytest.mark.parametrize("image", list(STUDIES))
def test_echo_model_rises_with_every_click(measured, image):
    """A model that puts each label where it is clicked: Dice rises with the clicks on both orientations of the
    study (clicks misplaced on the image grid, here or in the app, would miss the organs)."""
    results, _ = measured
    found = records(results, "echo", image)
    curve = np.mean([r["dice"] for r in found], axis=0)
    assert len(curve) == MAX_CLICKS + 1 and curve[0] == 0.0  # no clicks: all background
    assert curve[3] > curve[0] + CLEAR_RISE, curve
    assert np.all(np.diff(curve) > -0.01), curve
    for record in found:
        reference = np.asarray(nib.load(str(Path(results["references"]) / f"{image}.nii.gz")).dataobj)
        first = record["clicks"][0]  # nothing predicted yet: the first click is on the organ, inside it
        assert first["label"] == record["organ"] and first["region"] == MISSED
        assert reference[tuple(first["voxel"])] == ORGANS[record["organ"]]
        assert [c["clicks"] for c in record["calls"]] == list(range(MAX_CLICKS + 1))


def test_reoriented_study_gives_the_same_curves(measured):
    """The same voxels stored in another axis order and direction: the same clicks (mapped), the same Dice."""
    results, _ = measured
    for organ in ORGANS:
        original, reoriented = (
            [r for r in records(results, "echo", image) if r["organ"] == organ][0] for image in STUDIES
        )
        np.testing.assert_allclose(reoriented["dice"], original["dice"], atol=0.01)


def test_noc_agrees_with_the_curves(measured):
    results, _ = measured
    summary = results["summary"]["models"]["echo"]
    found = [r for r in results["records"] if r["model"] == "echo"]
    for threshold in THRESHOLDS:
        reached = [clicks_to_reach(r["dice"], threshold) for r in found]
        noc = summary["noc"][f"{threshold:.2f}"]
        assert noc["not_reached"] == pytest.approx(np.mean([k is None for k in reached]))
        assert noc["mean"] == pytest.approx(np.mean([MAX_CLICKS if k is None else k for k in reached]))
        for record, clicks in zip(found, reached):
            if clicks is not None:
                assert record["dice"][clicks] >= threshold and all(d < threshold for d in record["dice"][:clicks])
    assert summary["noc"]["0.80"]["mean"] <= summary["noc"]["0.85"]["mean"] <= summary["noc"]["0.90"]["mean"]


@pytest.mark.parametrize("model, flat", [("echo", False), ("deaf", True), ("auto", None)])
def test_curve_checks_flag_a_model_that_ignores_clicks(measured, model, flat):
    """Only the click-taking model whose curve stays flat is flagged, in the JSON and loudly on stdout."""
    results, stdout = measured
    check = results["summary"]["curve_checks"][model]
    assert check["flat"] is flat and check["falls"] == []
    assert (f"FLAG {model}: clicks have no effect" in stdout) == bool(flat)
    if flat is not None:
        assert (check["rise"] < FLAT_MARGIN) == flat


def test_automatic_model_is_asked_once_per_organ(measured):
    results, _ = measured
    assert results["models"]["auto"] == {"type": "segmentation", "takes_clicks": False}
    for record in (r for r in results["records"] if r["model"] == "auto"):
        assert [c["clicks"] for c in record["calls"]] == [0] and record["clicks"] == []
        assert record["dice"] == [record["dice"][0]] * (MAX_CLICKS + 1)


def test_organ_absent_from_a_reference_is_listed_not_measured(measured):
    results, _ = measured
    pairs = {f"{image} / {model}" for image in STUDIES for model in MODELS}
    assert results["absent_from_reference"] == {pair: [ABSENT] for pair in pairs}
    assert ABSENT not in {r["organ"] for r in results["records"]}
