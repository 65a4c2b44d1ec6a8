"""A small Rep3D trained on the real CT in ``../shared/data``:
``python -m rep3d_networks.real_ct --output_dir real_ct_output``.

1. cuts the shared abdomen-pelvis CT (3 mm, TotalSegmentator labels mapped to the AMOS classes) into disjoint z-slabs
   in the AMOS22 layout (``rep3d_networks.data totalseg``) and splits them with
   :func:`rep3d_networks.data.splits.class_aware_split` (the held-out slabs hold only organs that training slabs hold),
2. trains a scratch copy of ``bundles/amos_ct`` at 3 mm with a small Rep3D (``monai.bundle run``, train.json with
   command-line overrides), evaluates the best checkpoint on the held-out test slab(s) and on the training slabs
   (evaluate.json),
3. writes the overrides into the copy's ``inference.json`` (:data:`INFERENCE_OVERRIDES`), so that
   ``monai.bundle run --config_file <copy>/configs/inference.json`` and the MONAI Label app
   (``--conf bundles_dir <output_dir>/bundles --conf models amos_ct``) load ``models/model.pt`` as they are, and runs
   that inference on the test slab(s),
4. writes ``results.md``: the per-organ Dice / HD95 tables (test and training slabs), the settings, the time and
   what the run depends on (:func:`run_record`: commit, library versions, CPU, torch threads, the checkpoint's SHA-256).

Reproducibility: on one machine two runs with the same arguments give the same checkpoint bit for bit (the seed fixes
the weights, the slab draws and the crops; ``tests/test_quickstart.py::test_real_ct_model_is_reproducible``). The
float rounding depends on the CPU (oneDNN picks its convolution kernels by instruction set) and on the number of torch
threads, and 3000 iterations amplify a difference in the last bit into another model: a run on another CPU or with
another ``--num_threads`` is another draw, not the same result.

Caveats: every slab comes from one person (the cases are not independent), and the labels are TotalSegmentator
predictions, not expert annotations. The repository's bundle is never changed.
"""

import json
import platform
import shutil
import subprocess
import time
from pathlib import Path

import fire
import monai
import torch
from monai.bundle import ConfigParser

from rep3d_networks.analysis.convergence_data import default_shared_data
from rep3d_networks.bundles.recipe import AFFINE, CROP, class_balanced_crop, class_weighted_sampling
from rep3d_networks.data.cli import totalseg
from rep3d_networks.data.datalist import datalist_filename, write_json_files
from rep3d_networks.data.slabs import class_aware_datalist, class_counts
from rep3d_networks.data.specs import get_dataset_spec
from rep3d_networks.package import sha256
from rep3d_networks.quickstart import (
    AFFINE_PROB,
    BUNDLE,
    SMALL_NETWORK,
    recipe_differences,
    repo_bundle_dir,
    run_bundle,
)

PIXDIM = [3.0, 3.0, 3.0]  # the shared CT's own spacing: no resampling
PATCH = [64, 64, 16]  # 19 cm x 19 cm x 4.8 cm
SLAB_SLICES = 14  # 8 slabs of 14 slices tile the CT's 112 slices without overlap (no held-out voxel is trained on)
INFERENCE_OVERRIDES = {**SMALL_NETWORK, "pixdim": PIXDIM, "inferer#roi_size": PATCH}
TRAINING_EVAL = "eval_training"  # evaluate.json's output on the training slabs, beside the test slab's eval/


def write_inference_overrides(bundle: Path) -> None:
    """Sets :data:`INFERENCE_OVERRIDES` in ``bundle/configs/inference.json`` (a copy, never the repository's)."""
    path = bundle / "configs" / "inference.json"
    parser = ConfigParser(ConfigParser.load_config_file(str(path)))
    for key, value in INFERENCE_OVERRIDES.items():
        parser[key] = value
    ConfigParser.export_config_file(parser.get(), str(path), indent=4)


def source_commit() -> str:
    """The git commit of the ``rep3d_networks`` that runs, marked when the checkout has uncommitted changes."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    try:
        commit = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        changes = subprocess.run(
            git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return commit.stdout.strip() + (" with uncommitted changes" if changes.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run_record(checkpoint: Path) -> str:
    """What a run's numbers depend on beyond its arguments: commit, torch and MONAI, CPU and its kernels, torch threads,
    and the checkpoint it produced (two runs agree bit for bit when this line does, SHA-256 included)."""
    return (
        f"rep3d_networks {source_commit()}, torch {torch.__version__}, MONAI {monai.__version__}, CPU {cpu_name()} "
        f"(torch kernels {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch thread(s); "
        f"checkpoint SHA-256 {sha256(checkpoint)}"
    )


def main(
    output_dir: str = "real_ct_output",
    shared_data: str = None,
    iterations: int = 3000,
    # 1e-2 fits the training slabs worse and its validation Dice collapses late (docs/real_ct_model.md)
    learning_rate: float = 3e-3,
    weight_decay: float = None,
    num_cases: int = 8,
    num_validations: int = 10,
    seed: int = 0,
    num_threads: int = 1,
    class_balanced: bool = True,
) -> str:
    """Trains, evaluates and serves-ready-packages the small real-CT model; returns the path of ``results.md``.

    Args:
        output_dir: where the slabs, the bundle copy (``bundles/amos_ct``, checkpoint ``models/model.pt``),
            predictions and results go.
        shared_data: the shared data folder (default ``$REP3D_SHARED_DATA`` or ``../shared/data``).
        iterations: training iterations.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay, default the bundle's; each step shrinks the weights by
            ``learning_rate * weight_decay``.
        num_cases: disjoint z-slabs cut from the CT (one validation and one test slab, the others train).
        num_validations: validations (best-checkpoint selection) during training, evenly spaced.
        seed: training seed (the split follows from the slabs' classes).
        num_threads: torch CPU threads (1: on shared cores two threads stall, see ``rep3d_networks.ops``; 0 keeps
            torch's default). The result depends on it: another thread count sums in another order.
        class_balanced: crop centres drawn per class (:func:`class_balanced_crop`) instead of the recipe's pos/neg
            crop, and slabs drawn in proportion to the classes they hold (:func:`class_weighted_sampling`) instead of
            uniformly.
    """
    start = time.perf_counter()
    out = Path(output_dir).resolve()
    bundle = out / "bundles" / BUNDLE
    if bundle.exists():
        raise FileExistsError(f"{bundle} already exists: choose another --output_dir or remove it.")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    shared = Path(shared_data) if shared_data is not None else default_shared_data()
    if num_threads > 0:
        torch.set_num_threads(int(num_threads))
    print(
        f"[real_ct] {torch.get_num_threads()} torch thread(s), seed "
        f"{int(seed)} (the model depends on both and on the CPU)"
    )
    data_dir = Path(totalseg(BUNDLE, str(shared), str(out / "data"), num_cases=num_cases, min_slab_slices=SLAB_SLICES))
    shutil.copytree(repo_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json"))
    datalist = class_aware_datalist(BUNDLE, data_dir)
    write_json_files({bundle / "configs" / datalist_filename(0): datalist}, overwrite=True)

    interval = max(1, int(iterations) // max(1, int(num_validations)))
    train = dict(
        dataset_dir=str(data_dir),
        num_workers=0,
        cache_rate=1.0,
        pixdim=PIXDIM,
        roi_size=PATCH,
        learning_rate=float(learning_rate),
        max_iterations=int(iterations),
        val_interval=interval,
        checkpoint_interval=int(iterations),
        initialize=[f"$monai.utils.set_determinism(seed={int(seed)})"],
        **SMALL_NETWORK,
        **{f"{AFFINE}#prob": AFFINE_PROB},
    )
    if weight_decay is not None:
        train["optimizer#weight_decay"] = float(weight_decay)
    if class_balanced:
        train[CROP] = class_balanced_crop(get_dataset_spec(BUNDLE).num_classes)
        train.update(class_weighted_sampling(class_counts(data_dir, datalist["training"])))
    differences = recipe_differences(bundle, train)
    print("[real_ct] settings that differ from the paper recipe (bundles/amos_ct/configs/train.json):")
    for line in differences:
        print(f"[real_ct]   {line}")
    print(f"[real_ct] training {iterations} iterations on {data_dir}")
    run_bundle(bundle, ["train.json"], **train)
    train_minutes = (time.perf_counter() - start) / 60
    print("[real_ct] evaluating the best checkpoint on the held-out test slab(s)")
    run_bundle(bundle, ["train.json", "evaluate.json"], **train)
    print("[real_ct] evaluating it on the training slabs (how well it fits what it saw)")
    run_bundle(
        bundle,
        ["train.json", "evaluate.json"],
        **train,
        output_dir=str(bundle / TRAINING_EVAL),
        **{"validate#dataset#data": "$load_datalist(@datalist, 'training', @dataset_dir)"},
    )

    write_inference_overrides(bundle)
    test_images = [str(data_dir / item["image"]) for item in datalist["test"]]
    pred_dir = out / "predictions"
    print(
        f"[real_ct] inference (folded network, "
        f"{bundle / 'configs' / 'inference.json'}) on {len(test_images)} test slab(s)"
    )
    run_bundle(bundle, ["inference.json"], datalist=test_images, output_dir=str(pred_dir), num_workers=0)

    table = (bundle / "eval" / "summary.md").read_text().strip()
    training_table = (bundle / TRAINING_EVAL / "summary.md").read_text().strip()
    minutes = (time.perf_counter() - start) / 60
    record = run_record(bundle / "models" / "model.pt")
    split = {key: [Path(item["image"]).name for item in datalist[key]] for key in ("training", "validation", "test")}
    overrides = " ".join(f"--{key} '{json.dumps(value)}'" for key, value in INFERENCE_OVERRIDES.items())
    results = out / "results.md"
    results.write_text(
        f"# Small Rep3D on the real CT ({iterations} iterations, seed {seed})\n\n"
        f"Training {train_minutes:.1f} min, {minutes:.1f} min in all. Slabs: training {split['training']}, "
        f"validation {split['validation']}, test {split['test']}, split by their classes (slices of the CT: "
        f"{datalist['metadata']['slab_slices']}; all from one person; labels are TotalSegmentator predictions mapped "
        f"to the AMOS classes).\n\n"
        "Settings that differ from the paper recipe:\n\n"
        + "".join(f"- {line}\n" for line in differences)
        + f"\nPer-organ Dice / HD95 on the test slab(s) (organs absent from them are NaN):\n\n{table}\n\n"
        f"The same checkpoint on the training slabs (what it fits of what it saw; an organ it misses here is not "
        f"learnt, not merely not generalised):\n\n{training_table}\n\n"
        f"Run: {record}.\n\n"
        f"Checkpoint: `{bundle / 'models' / 'model.pt'}`. Its `configs/inference.json` already holds the width "
        f"overrides; with the repository's bundle pass `{overrides}` (and the body crop, see docs/real_ct_model.md).\n"
    )
    print(table)
    print(f"[real_ct] run: {record}")
    print(
        f"[real_ct] {minutes:.1f} min in all\n[real_ct] results: {results}\n[real_ct] checkpoint: "
        f"{bundle / 'models' / 'model.pt'}"
    )
    return str(results)


if __name__ == "__main__":
    fire.Fire(main)
