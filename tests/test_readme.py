"""README.md's command lines, read from README.md and run as typed (placeholder paths filled in, tiny settings
appended as further ``--key value`` overrides so that they run on 2 CPU cores).

The MONAI Label launcher ``python apps/rep3d/start_server.py ...`` is the command every server test starts
(``tests/app_helpers.py``); its error message for an unknown model is compared with README's in ``tests/test_app.py``.
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from app_helpers import CT, TINY, TINY_INFERENCE, save_random_weights, write_overrides
from bundle_helpers import (
    TINY_INFER,
    TINY_TRAIN,
    check_evaluated_test_split,
    check_label_matches_image,
    copy_bundle,
    make_dataset,
    num_classes,
    run_bundle,
)
from readme_helpers import fill, readme_command


def as_args(overrides: dict) -> list:
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def run_typed(command: list, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """``command`` (``python ...``) with this interpreter, from ``cwd``; it must succeed."""
    result = subprocess.run(
        [sys.executable, *command[1:], *extra], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    return result


def label_in(folder: Path) -> np.ndarray:
    written = list(folder.rglob("*_seg.nii.gz"))
    assert len(written) == 1, written
    return np.asarray(nib.load(str(written[0])).dataobj)


def test_prepare_train_evaluate_infer_commands(tmp_path):
    """README's "Train, evaluate, infer with a bundle" block for ``msd_pancreas``, on the phantom."""
    bundle = copy_bundle("msd_pancreas", tmp_path / "bundles")
    data_dir = make_dataset("msd_pancreas", "phantom", tmp_path / "data")
    new_case = tmp_path / "new_case.nii.gz"
    shutil.copy(sorted((data_dir / "imagesTr").glob("*.nii.gz"))[0], new_case)
    values = {"/data/Task07_Pancreas": str(data_dir), "/data/new_case.nii.gz": str(new_case)}

    def typed(prefix: str, contains: str = "") -> list:
        return fill(readme_command(prefix, contains), values)

    run_typed(typed("python -m rep3d_networks.data prepare", "msd_pancreas"), tmp_path)
    datalist = bundle / "configs" / "datalist_fold0.json"
    assert datalist.is_file()
    assert readme_command("cd ") == ["cd", "bundles/msd_pancreas"]

    result = run_typed(typed("python -m monai.bundle run training"), bundle, *as_args(TINY_TRAIN))
    assert (bundle / "models" / "model.pt").is_file() and "val_mean_dice" in result.stdout + result.stderr

    run_typed(typed("python -m monai.bundle run", "configs/evaluate.json"), bundle, *as_args(TINY_TRAIN))
    check_evaluated_test_split(bundle, data_dir, datalist)

    infer = typed("python -m monai.bundle run", "configs/inference.json --datalist")
    run_typed(infer, bundle, *as_args(TINY_INFER))
    written = list((bundle / "preds").rglob("*_seg.nii.gz"))
    assert len(written) == 1, written
    check_label_matches_image(written[0], new_case, num_classes(bundle))


def test_clicks_command(tmp_path, shared_data):
    """README's DeepEdit command line with ``--clicks`` (parsed by the CLI) equals the same clicks given in Python,
    and differs from the automatic result."""
    bundle = copy_bundle("amos_ct_deepedit", tmp_path / "bundles")
    write_overrides(bundle / "configs" / "train.json", TINY)
    save_random_weights(bundle, seed=3)
    shutil.copy(shared_data / CT, bundle / "ct.nii.gz")
    tiny = {**TINY, **TINY_INFERENCE, "num_workers": 0}
    command = readme_command("python -m monai.bundle run", "--clicks")
    run_typed(command, bundle, *as_args(tiny))
    typed = label_in(bundle / "eval")

    def in_process(out: str, **clicks) -> np.ndarray:
        run_bundle(
            bundle,
            ["inference.json"],
            datalist=[str(bundle / "ct.nii.gz")],
            output_dir=str(tmp_path / out),
            **clicks,
            **tiny,
        )
        return label_in(tmp_path / out)

    clicks = ast.literal_eval(command[command.index("--clicks") + 1])  # the README's literal, as fire reads it
    np.testing.assert_array_equal(typed, in_process("clicked", clicks=clicks))
    assert not np.array_equal(typed, in_process("automatic"))
