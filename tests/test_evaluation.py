"""Evaluation as in the paper (issue #6): summary tables, the Wilcoxon comparison CLI, training curves, 5-fold
ensembling."""

import itertools
import json
import logging
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import (
    TINY_INFER,
    TINY_TRAIN,
    check_evaluated_test_split,
    check_label_matches_image,
    copy_bundle,
    make_dataset,
    num_classes,
    prepare_bundle,
    run_bundle,
)
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import HausdorffDistance
from scipy import ndimage

from rep3d_networks import Rep3D
from rep3d_networks.compare import main as compare_main
from rep3d_networks.evaluation import compare_tables, read_metric_table, summary_rows
from rep3d_networks.handlers import HausdorffDistanceMM, TrainingCurves

A = np.array([0.80, 0.75, 0.90, 0.60, 0.85, 0.70, 0.65, 0.88])
D = np.array([0.05, -0.02, 0.03, 0.08, 0.01, 0.06, -0.04, 0.07])  # distinct |d|, no zero: exact test
CASES = [f"/data/run_a/case_{i:03d}/imaging.nii.gz" for i in range(len(A))]


def exact_wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided exact signed-rank p-value by enumerating all 2^n sign patterns (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = ranks[d > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    tail = min((sums <= w_plus).mean(), (sums >= w_plus).mean())
    return min(1.0, 2 * tail)


def write_table(path, cases, columns, values, delimiter):
    lines = [delimiter.join(["filename", *columns, "mean"])]
    for case, row in zip(cases, values):
        lines.append(delimiter.join([case, *(f"{v:.4f}" for v in row), f"{np.nanmean(row):.4f}"]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def two_runs(tmp_path):
    """Run a (comma-separated) and run b (tab-separated, other folder, shuffled rows, one NaN)."""
    second_a = A[::-1].copy()
    second_b = second_a + D[::-1] * 2
    second_b[3] = np.nan
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_table(a, CASES, ["class0", "class1"], np.stack([A, second_a], 1), ",")
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    cases_b = [CASES[i].replace("/data/run_a/", "/other/copy/") for i in order]
    write_table(b, cases_b, ["class0", "class1"], np.stack([A + D, second_b], 1)[order], "\t")
    return a, b, second_a, second_b


def test_wilcoxon_matches_exact_enumeration(two_runs):
    a, b, second_a, second_b = two_runs
    rows = compare_tables(read_metric_table(str(a)), read_metric_table(str(b)))
    assert [r.name for r in rows] == ["class0", "class1", "mean over classes"]
    assert rows[0].n == 8 and rows[0].difference == pytest.approx(D.mean(), abs=1e-6)
    assert rows[0].p_value == pytest.approx(exact_wilcoxon_p(D), rel=1e-9)
    assert rows[0].p_value == pytest.approx(2 * 14 / 256)  # W- = 2 + 4 = 6; 14 of 256 sign patterns have W- <= 6
    keep = ~np.isnan(second_b)
    d1 = np.round(second_b[keep], 4) - np.round(second_a[keep], 4)
    assert rows[1].n == 7 and rows[1].p_value == pytest.approx(exact_wilcoxon_p(d1), rel=1e-9)


def test_compare_cli(two_runs, tmp_path, capsys):
    a, b, _, _ = two_runs
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            {
                "network_data_format": {
                    "outputs": {
                        "pred": {"num_channels": 3, "channel_def": {"0": "background", "1": "kidney", "2": "tumor"}}
                    }
                }
            }
        )
    )
    out = tmp_path / "cmp.md"
    assert compare_main([str(a), str(b), "--meta_file", str(meta), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text()
    kidney = next(line for line in text.splitlines() if line.startswith("| kidney |"))
    assert kidney.split("|")[2:7] == [" 8 ", " 0.7662 ", " 0.7963 ", " +0.0300 ", " 0.1094 "]
    assert "| tumor | 7 |" in text and "| mean over classes | 8 |" in text

    # the module runs as a command
    result = subprocess.run(
        [sys.executable, "-m", "rep3d_networks.compare", str(a), str(b)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "| class0 | 8 |" in result.stdout, result.stderr


def test_compare_cli_names_the_file_on_mismatch(two_runs, tmp_path, capsys):
    a, b, _, _ = two_runs
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(a.read_text().splitlines()[:-2]) + "\n")
    assert compare_main([str(fewer), str(b)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the cases differ") and str(b) in err and "case_006" in err

    other = tmp_path / "other_classes.csv"
    write_table(other, CASES, ["class0", "class7"], np.stack([A, A], 1), ",")
    assert compare_main([str(a), str(other)]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "class7" in err

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("filename,class0\ncase,0.5,0.7\n")
    assert compare_main([str(ragged), str(b)]) == 1
    assert f"{ragged}, line 2" in capsys.readouterr().err


def test_summary_rows_mean_std_and_non_finite():
    dice = np.array([[0.9, 0.5], [0.7, np.nan], [0.8, 0.7]])
    hd95 = np.array([[2.0, np.inf], [4.0, 6.0], [6.0, 8.0]])
    rows = summary_rows({"dice": dice, "hd95": hd95}, ["liver", "tumor"])
    assert [r["class"] for r in rows] == ["liver", "tumor", "mean (classes without background)"]
    assert rows[0]["dice_mean"] == pytest.approx(0.8) and rows[0]["dice_std"] == pytest.approx(np.std([0.9, 0.7, 0.8]))
    assert rows[1]["dice_n"] == 2 and rows[1]["hd95_n"] == 2 and rows[1]["hd95_mean"] == pytest.approx(7.0)
    assert rows[2]["dice_mean"] == pytest.approx((0.8 + 0.6) / 2)  # mean of the class means
    assert rows[2]["dice_std"] == pytest.approx(np.std([0.7, 0.7, 0.75]))  # over cases of the per-case mean


def cube_pair(shift):
    """One-hot ``[2, 16, 16, 16]`` label and prediction: the same 6³ cube, the prediction moved by ``shift`` voxels
    (one per axis)."""
    label, pred = torch.zeros(2, 16, 16, 16), torch.zeros(2, 16, 16, 16)
    label[1, 4:10, 4:10, 4:10] = 1
    x, y, z = shift
    pred[1, 4 + x : 10 + x, 4 + y : 10 + y, 4 + z : 10 + z] = 1
    label[0], pred[0] = 1 - label[1], 1 - pred[1]
    return pred, label


def hd95(handler, pred, label) -> float:
    """The handler's value after an evaluator-like engine whose output is ``([pred], [label])``."""
    engine = Engine(lambda engine, batch: batch)
    handler.attach(engine, "hd95")
    engine.run([([pred], [label])])
    return float(engine.state.metrics["hd95"])


def hd95_by_brute_force(pred: np.ndarray, label: np.ndarray, spacing) -> float:
    """The symmetric 95th-percentile surface distance of two masks, without MONAI: surface voxels are the mask minus
    its erosion, and every surface voxel's distance (in mm) to the other surface is the minimum over all pairs."""
    surfaces = [np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing, float) for m in (pred, label)]
    distances = np.linalg.norm(surfaces[0][:, None] - surfaces[1][None], axis=-1)
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


SPACING = (0.8, 1.5, 3.0)  # a different spacing per axis: swapped axes or voxel units give other distances
HD95_SHIFTS = [  # (name, shift in voxels, HD95 in mm where it is simply shift x spacing along one axis)
    ("x", (2, 0, 0), 1.6),
    ("y", (0, 2, 0), 3.0),
    ("z", (0, 0, 2), 6.0),
    ("x, y and z", (2, 1, 1), None),
]


@pytest.mark.parametrize("shift, millimetres", [row[1:] for row in HD95_SHIFTS], ids=[row[0] for row in HD95_SHIFTS])
def test_hd95_handler_measures_millimetres_on_an_anisotropic_grid(shift, millimetres):
    """On a 0.8 x 1.5 x 3 mm grid, a cube moved along each axis (and along all three): HD95 in millimetres, as a
    brute-force computation gives (and, along one axis, the shift times that axis' spacing); MONAI's own handler
    gives voxels."""
    pred, label = cube_pair(shift)
    masks = pred[1].numpy() > 0, label[1].numpy() > 0
    expected = hd95_by_brute_force(*masks, SPACING)
    if millimetres is not None:
        assert expected == pytest.approx(millimetres)
    voxels = hd95_by_brute_force(*masks, (1, 1, 1))
    assert not np.isclose(expected, voxels)
    assert hd95(HausdorffDistance(include_background=False, percentile=95), pred, label) == pytest.approx(voxels)
    metric = HausdorffDistanceMM(include_background=False, percentile=95)
    affine = torch.diag(torch.tensor([*SPACING, 1.0]))
    assert hd95(metric, pred, MetaTensor(label, affine=affine)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs each label as a MetaTensor"):
        hd95(metric, pred, label)


def test_training_curves_never_stop_training(tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(float(batch))}])
    TrainingCurves(output_dir=str(blocker)).attach(trainer)
    with caplog.at_level(logging.WARNING):
        trainer.run([3, 2, 1], max_epochs=1)
    assert trainer.state.iteration == 3 and "TrainingCurves: save failed" in caplog.text

    ok = TrainingCurves(output_dir=str(tmp_path / "curves"))
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(float(batch))}])
    ok.attach(trainer)
    trainer.run([3, 2, 1], max_epochs=1)
    assert ok.losses == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert (tmp_path / "curves" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_then_evaluate_writes_curves_and_named_summary(tmp_path):
    bundle = copy_bundle("kits", tmp_path / "bundles")
    data_dir = make_dataset("kits", "phantom", tmp_path / "data")
    datalist = prepare_bundle(bundle, data_dir)
    run_bundle(bundle, ["train.json"], dataset_dir=str(data_dir), **TINY_TRAIN)
    png = bundle / "eval" / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    run_bundle(bundle, ["train.json", "evaluate.json"], dataset_dir=str(data_dir), **TINY_TRAIN)
    md = (bundle / "eval" / "summary.md").read_text()
    assert md.splitlines()[0] == "| class | Dice | HD95 (mm) |"
    names = [line.split("|")[1].strip() for line in md.splitlines()[2:]]
    assert names == ["kidney", "tumor", "cyst", "mean (classes without background)"]
    header = (bundle / "eval" / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("class,val_mean_dice_mean,val_mean_dice_std,val_mean_dice_n,val_hd95_mean")
    for metric in ["val_mean_dice", "val_hd95"]:  # both per-case tables read back (MONAI repeats "mean" in the second)
        table = read_metric_table(str(bundle / "eval" / f"{metric}_raw.csv"))
        assert table.classes == ("class0", "class1", "class2") and len(table.cases) == 1
    check_evaluated_test_split(bundle, data_dir, datalist)


# Class probabilities of the five fold models of ``kits`` (background, kidney, tumor, cyst), the same at every voxel,
# chosen so that the answer depends on how the ensemble combines them: the mean of the five softmax outputs picks
# tumor (0.268), the mean of the five logits picks cyst (0.24 in every model: the largest geometric mean), and the
# mean of any four picks background or kidney.
FOLD_PROBABILITIES = [[0.01, 0.57, 0.18, 0.24]] * 2 + [[0.57, 0.01, 0.18, 0.24]] * 2 + [[0.07, 0.07, 0.62, 0.24]]
ENSEMBLE_OVERRIDES = {**TINY_INFER, "precision": "float32", "save_probabilities": True}  # float32: exact means


def constant_model(classes: int, probabilities, seed: int) -> dict:
    """A random tiny Rep3D whose head ignores its features: every voxel gets ``probabilities`` after softmax."""
    torch.manual_seed(seed)
    state = Rep3D(1, classes, feature_size=8, hidden_size=32).state_dict()
    state["decoder.head.conv.conv.weight"].zero_()
    state["decoder.head.conv.conv.bias"].copy_(torch.log(torch.tensor(probabilities)))
    return state


def fold_logits(states) -> np.ndarray:
    """Each fold model's logits (folds x classes), averaged over the voxels of a random 32³ input."""
    logits = []
    for state in states:
        network = Rep3D(1, state["decoder.head.conv.conv.bias"].numel(), feature_size=8, hidden_size=32).eval()
        network.load_state_dict(state)
        with torch.no_grad():
            logits.append(network(torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)))[0])
    return np.stack([x.flatten(1).mean(1).numpy().astype(np.float64) for x in logits])


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def test_five_fold_ensemble_inference(tmp_path):
    """The ensemble's labels and probabilities are the mean of the five fold models' softmax outputs, computed here
    with numpy from the models' own outputs; with ``FOLD_PROBABILITIES`` averaging the logits instead, or leaving
    out any one fold, gives another class."""
    bundle = copy_bundle("kits", tmp_path / "bundles")
    data_dir = make_dataset("kits", "phantom", tmp_path / "data")
    datalist = prepare_bundle(bundle, data_dir)
    states = [constant_model(num_classes(bundle), p, seed=k) for k, p in enumerate(FOLD_PROBABILITIES)]
    for k, state in enumerate(states):
        (bundle / "models" / f"fold{k}").mkdir(parents=True)
        torch.save(state, bundle / "models" / f"fold{k}" / "model.pt")
    logits = fold_logits(states)
    probabilities = softmax(logits)
    expected = int(np.argmax(probabilities.mean(0)))
    logit_mean = softmax(logits.mean(0))
    assert np.argmax(logit_mean) != expected, f"averaging logits also picks {expected}: {logit_mean.round(3)}"
    four_folds = [int(np.argmax(np.delete(probabilities, k, 0).mean(0))) for k in range(len(states))]
    assert expected not in four_folds, (expected, four_folds)  # so does any four of the five

    case = json.loads(datalist.read_text())["test"][0]
    image = data_dir / case["image"]
    out_dir = tmp_path / "pred"
    run_bundle(
        bundle,
        ["inference.json", "inference_ensemble.json"],
        dataset_dir=str(data_dir),
        datalist=[str(image)],
        output_dir=str(out_dir),
        **ENSEMBLE_OVERRIDES,
    )
    written = list(out_dir.rglob("*_seg.nii.gz"))
    assert len(written) == 1, written
    check_label_matches_image(written[0], image, num_classes(bundle))
    labels = np.asarray(nib.load(str(written[0])).dataobj)
    saved = np.asarray(nib.load(str(next(out_dir.rglob("*_prob.nii.gz")))).dataobj)  # x, y, z, classes
    # inside the body crop every voxel is the ensemble's; outside it (air) the output stage writes background
    inside_body = np.asarray(nib.load(str(data_dir / case["label"])).dataobj) > 0
    assert inside_body.any()
    classes_written, inside = np.unique(labels).tolist(), np.unique(labels[inside_body]).tolist()
    assert set(classes_written) <= {0, expected} and inside == [expected], (expected, classes_written, inside)
    np.testing.assert_allclose(
        saved[inside_body], np.broadcast_to(probabilities.mean(0), saved[inside_body].shape), atol=1e-5
    )

    (bundle / "models" / "fold3" / "model.pt").unlink()
    with pytest.raises(Exception) as error:
        run_bundle(
            bundle,
            ["inference.json", "inference_ensemble.json"],
            dataset_dir=str(data_dir),
            datalist=[str(image)],
            output_dir=str(out_dir),
            **TINY_INFER,
        )
    chain, cause = [], error.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(e, FileNotFoundError) and "fold3/model.pt" in str(e) for e in chain), chain
