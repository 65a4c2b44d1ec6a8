"""The models of the click study (``docs/interactive.md``), trained on a CPU with one set of settings:
``python -m rep3d_networks.click_models --dataset phantom --output_dir click_models_phantom`` (or
``--dataset real_ct``).

Three scratch bundle copies under ``<output_dir>/bundles/``, trained on the same data, transforms, crops, seed and
number of iterations, so that they can be compared side by side:

* ``amos_ct_deepedit``: the click-guided Rep3D (MONAI's DeepEdit loop: ``monai.apps.deepedit.interaction.Interaction``
  simulates clicks while training, as ``bundles/amos_ct_deepedit/configs/train.json`` configures it),
* ``amos_ct_deepedit_dynunet``: the same bundle with MONAI's own DeepEdit network, the ``DynUNet`` of MONAI Label's
  radiology sample app (:data:`DYNUNET`), as the reference,
* ``amos_ct``: the automatic Rep3D (no clicks), the control whose answer clicks cannot change.

Settings: ``--dataset phantom`` those of ``rep3d_networks.quickstart`` (20 synthetic cases of 40³ voxels, a small
Rep3D, 32³ patches), ``--dataset real_ct`` those of ``rep3d_networks.real_ct`` (z-slabs of the shared real CT at 3 mm,
64 x 64 x 16 patches, class-balanced crops). The settings that differ from the paper recipe are printed and written to
``results.md``. Each copy's ``configs/inference.json`` gets the same overrides, so the MONAI Label app serves the
copies as they are (``--conf bundles_dir <output_dir>/bundles``); the held-out images (``heldout/images``) are the
server's studies and ``heldout/labels`` the simulated annotator's references (``python -m rep3d_networks.analysis
clicks``). Weights stay in ``<output_dir>``; the repository's bundles are not touched.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Tuple

import fire
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from rep3d_networks import quickstart, real_ct
from rep3d_networks.analysis.convergence_data import default_shared_data
from rep3d_networks.bundles.recipe import AFFINE, CROP, class_balanced_crop, class_weighted_sampling
from rep3d_networks.data.cli import phantom, prepare, totalseg
from rep3d_networks.data.datalist import datalist_filename, write_json_files
from rep3d_networks.data.slabs import class_aware_datalist, class_counts
from rep3d_networks.data.specs import get_dataset_spec
from rep3d_networks.quickstart import AFFINE_PROB, SMALL_NETWORK, recipe_differences

DATASET = "amos_ct"
REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
DYNUNET = {
    "_target_": "DynUNet",
    "spatial_dims": 3,
    "in_channels": "$@number_intensity_ch + len(@label_names)",
    "out_channels": "@num_classes",
    "kernel_size": [3, 3, 3, 3, 3, 3],
    "strides": [1, 2, 2, 2, 2, [2, 2, 1]],
    "upsample_kernel_size": [2, 2, 2, 2, [2, 2, 1]],
    "norm_name": "instance",
    "deep_supervision": False,
    "res_block": True,
}
"""MONAI Label's radiology sample app's DeepEdit network (``lib/configs/deepedit.py``), sized by the bundle's labels."""

MODELS = {  # model -> (copy's folder name, repository bundle, network overrides of train.json and inference.json)
    "rep3d": ("amos_ct_deepedit", "amos_ct_deepedit", SMALL_NETWORK),
    "dynunet": ("amos_ct_deepedit_dynunet", "amos_ct_deepedit", {"network_def": DYNUNET}),
    "auto": ("amos_ct", "amos_ct", SMALL_NETWORK),
}
TRAINED = "trained.json"
"""Written in a copy when its training has finished (settings, best validation Dice, minutes): a copy without it is
retrained, never served as if trained."""
SETTINGS = {  # dataset -> (patch, learning rate, iterations)
    "phantom": (quickstart.PATCH, quickstart.LEARNING_RATE, quickstart.ITERATIONS),
    "real_ct": (real_ct.PATCH, 3e-3, 600),
}


def phantom_data(out: Path, seed: int, num_heldout: int) -> Tuple[Path, Dict, List[Path]]:
    """The quickstart's phantom (20 cases: training / validation split by ``prepare``) and ``num_heldout`` more cases
    drawn with another seed as the held-out set; returns (data folder, datalist, held-out images)."""
    data_dir = Path(phantom(DATASET, str(out / "data"), num_cases=20, size=40, seed=seed))
    configs = out / "datalist"
    configs.mkdir(parents=True, exist_ok=True)
    prepare(DATASET, str(data_dir), str(configs), seed=seed)
    datalist = json.loads((configs / datalist_filename(0)).read_text())
    extra = Path(phantom(DATASET, str(out / "heldout_source"), num_cases=num_heldout, size=40, seed=seed + 1000))
    heldout = sorted(extra.glob("images*/*.nii.gz"))
    return data_dir, datalist, heldout


def real_ct_data(out: Path, shared: Path) -> Tuple[Path, Dict, List[Path]]:
    """``rep3d_networks.real_ct``'s slabs and class-aware split; the held-out images are its test slab(s)."""
    data_dir = Path(totalseg(DATASET, str(shared), str(out / "data"), num_cases=8, min_slab_slices=real_ct.SLAB_SLICES))
    datalist = class_aware_datalist(DATASET, data_dir)
    return data_dir, datalist, [data_dir / item["image"] for item in datalist["test"]]


def label_of(image: Path) -> Path:
    """The AMOS-layout label of an AMOS-layout image (``imagesXx/<case>`` -> ``labelsXx/<case>``)."""
    return image.parents[1] / image.parent.name.replace("images", "labels") / image.name


def write_heldout(images: List[Path], out: Path) -> Path:
    """Copies the held-out images to ``heldout/images`` (the server's studies) and their labels to
    ``heldout/labels``."""
    for image in images:
        for source, folder in ((image, "images"), (label_of(image), "labels")):
            (out / "heldout" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, out / "heldout" / folder / image.name)
    return out / "heldout"


def fresh_copy(source: str, bundle: Path, datalist: Dict) -> Path:
    """A new copy of the repository's bundle ``source`` at ``bundle`` (without weights, eval or datalists; an older
    copy there is removed: a run stopped before the end left an early checkpoint, not the model), ``datalist`` as
    its fold 0."""
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(
        REPO_BUNDLES / source, bundle, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json")
    )
    write_json_files({bundle / "configs" / datalist_filename(0): datalist}, overwrite=True)
    return bundle


def train_copy(bundle: Path, overrides: Dict) -> float:
    """Runs ``train.json`` of a bundle copy (what ``monai.bundle run`` does) and returns its best validation Dice."""
    configs = bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        bundle_root=str(bundle),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    best = float(workflow.parser.get_parsed_content("validate#evaluator").state.best_metric)
    workflow.finalize()
    return best


def write_config(bundle: Path, config: str, overrides: Dict) -> None:
    """Writes ``overrides`` (``#``-separated ids) into the copy's ``configs/<config>`` (never the repository's)."""
    path = bundle / "configs" / config
    parser = ConfigParser(ConfigParser.load_config_file(str(path)))
    for key, value in overrides.items():
        parser[key] = value
    ConfigParser.export_config_file(parser.get(), str(path), indent=4)


def serve_ready(bundle: Path, source: str, overrides: Dict) -> None:
    """The copy's ``inference.json``: the repository bundle's current one with the network, grid and window
    overrides (also for a copy trained earlier: weights stay valid when only the serving pipeline changes)."""
    shutil.copy(REPO_BUNDLES / source / "configs" / "inference.json", bundle / "configs" / "inference.json")
    write_config(bundle, "inference.json", overrides)


def grid_overrides(dataset: str) -> Dict:
    """The voxel grid of the copies' train.json and inference.json: the real CT's 3 mm, the bundle's own for the
    phantom."""
    return {"pixdim": real_ct.PIXDIM} if dataset == "real_ct" else {}


def train_overrides(dataset: str, data_dir: Path, datalist: Dict, iterations: int, seed: int) -> Dict:
    """The ``train.json`` overrides shared by every copy (the network aside): the settings of ``dataset``
    (:data:`SETTINGS`), the seed, and for ``real_ct`` its class-balanced crops and slab sampling."""
    patch, learning_rate, _ = SETTINGS[dataset]
    train = dict(
        dataset_dir=str(data_dir),
        num_workers=0,
        cache_rate=1.0,
        roi_size=patch,
        learning_rate=float(learning_rate),
        max_iterations=iterations,
        val_interval=max(1, iterations // 10),
        checkpoint_interval=iterations,
        initialize=[f"$monai.utils.set_determinism(seed={seed})"],
        **{f"{AFFINE}#prob": AFFINE_PROB},
        **grid_overrides(dataset),
    )
    if dataset == "real_ct":
        train[CROP] = class_balanced_crop(get_dataset_spec(DATASET).num_classes)
        train.update(class_weighted_sampling(class_counts(data_dir, datalist["training"])))
    return train


CLICK_SETTINGS = {  # option of main() -> (config id in the DeepEdit train.json, why a run may change it)
    "click_probability": (
        "deepgrow_probability_train",
        "more iterations with simulated clicks: a short CPU run otherwise learns mostly the automatic mode",
    ),
    "max_interactions": (
        "max_interactions",
        "several rounds of error-driven clicks per click iteration, as an "
        "annotator corrects (background clicks beside organs are seen in training)",
    ),
    "guidance_sigma": (
        "guidance_sigma",
        "click blobs sized for small organs on this grid (the same in train.json and inference.json)",
    ),
}
"""The DeepEdit click-simulation settings a run may set (``None``: the bundle's own); :func:`click_overrides`."""


def click_overrides(bundle: Path, options: Dict) -> Tuple[Dict, List[str]]:
    """The DeepEdit copy's overrides for the options set in ``options`` and one line per value that differs from the
    bundle's ``train.json`` (printed and recorded with the recipe's other differences)."""
    config = ConfigParser(ConfigParser.load_config_file(str(bundle / "configs" / "train.json")))
    overrides, lines = {}, []
    for option, (key, reason) in CLICK_SETTINGS.items():
        if options.get(option) is None:
            continue
        overrides[key] = options[option]
        if config.get(key) != options[option]:
            lines.append(f"{key}: {config.get(key)} in the bundle, {options[option]} here ({reason})")
    permutation = options.get("label_permutation")
    if permutation:
        overrides["train#iteration_update"] = {
            "_target_": "rep3d_networks.deepedit.PermutedLabelInteraction",
            "interaction": config.get("train#iteration_update"),
            "probability": float(permutation),
            "number_intensity_ch": "@number_intensity_ch",
            "sigma": "@guidance_sigma",
        }
        lines.append(
            f"train#iteration_update: MONAI's DeepEdit Interaction in the bundle, rep3d_networks.deepedit."
            f"PermutedLabelInteraction here ({permutation} of the iterations on randomly permuted organ labels, "
            "always with clicks: only the clicks tell the organs apart, so following them is learned)"
        )
    return overrides, lines


def check_click_options(options: Dict) -> None:
    """Refuses out-of-range click settings before any data is made."""
    probability, interactions, sigma = (options[k] for k in CLICK_SETTINGS)
    permutation = options.get("label_permutation")
    if permutation is not None and not 0.0 <= float(permutation) <= 1.0:
        raise ValueError(f"label_permutation must be in [0, 1], got {permutation}")
    if probability is not None and not 0.0 <= float(probability) <= 1.0:
        raise ValueError(f"click_probability must be in [0, 1], got {probability}")
    if interactions is not None and int(interactions) < 1:
        raise ValueError(f"max_interactions must be >= 1, got {interactions}")
    if sigma is not None and float(sigma) <= 0:
        raise ValueError(f"guidance_sigma must be > 0 voxels, got {sigma}")


def run_line() -> str:
    """What the numbers depend on beyond the arguments: commit, torch, CPU, threads."""
    return (
        f"rep3d_networks {real_ct.source_commit()}, torch {torch.__version__}, CPU {real_ct.cpu_name()}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )


def write_results(out: Path, dataset: str, seed: int) -> Path:
    """``results.md``: one row per trained copy (from their :data:`TRAINED` records) and the settings that differ."""
    rows, notes = [], []
    for name in (folder for folder, _, _ in MODELS.values()):
        path = out / "bundles" / name / TRAINED
        if path.exists():
            record = json.loads(path.read_text())
            rows.append(
                f"| {name} | {record['model']} | {record['iterations']} | {record['best_validation_dice']:.3f} | "
                f"{record['training_minutes']:.1f} |"
            )
            notes.append(
                f"\n{name} ({record['run']}), settings that differ from the paper recipe:\n\n"
                + "".join(f"- {line}\n" for line in record["differences"])
            )
    module = "quickstart" if dataset == "phantom" else "real_ct"
    results = out / "results.md"
    results.write_text(
        f"# Click-study models, {dataset} (seed {seed}, the settings of rep3d_networks.{module})\n\n"
        "| bundle copy | model | iterations | best validation Dice | training min |\n|---|---|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
        + "".join(notes)
    )
    return results


def main(
    dataset: str = "phantom",
    output_dir: str = None,
    models: str = "rep3d,dynunet,auto",
    iterations: int = None,
    seed: int = 0,
    num_heldout: int = 4,
    num_threads: int = 1,
    shared_data: str = None,
    click_probability: float = None,
    max_interactions: int = None,
    guidance_sigma: float = None,
    label_permutation: float = None,
) -> str:
    """Trains the click study's models (module docstring) and returns the path of ``results.md``.

    Args:
        dataset: ``phantom`` (the quickstart's settings) or ``real_ct`` (the real-CT model's settings).
        output_dir: where data, bundle copies and results go (default ``click_models_<dataset>``).
        models: comma-separated subset of ``rep3d`` (DeepEdit Rep3D), ``dynunet`` (DeepEdit DynUNet), ``auto``
            (automatic Rep3D); a copy whose training finished is not trained again (several commands may share the
            folder).
        iterations: training iterations of every model (default: 600, the quickstart's, on both).
        seed: data (phantom) and training seed.
        num_heldout: phantom only: held-out cases, drawn with another seed than the training phantom.
        num_threads: torch CPU threads (1: see ``rep3d_networks.ops``; 0 keeps torch's default).
        shared_data: real_ct only: the shared data folder (default ``$REP3D_SHARED_DATA`` or ``../shared/data``).
        click_probability: DeepEdit copies: share of training iterations with simulated clicks (default: the
            bundle's ``deepgrow_probability_train``).
        max_interactions: DeepEdit copies: rounds of simulated clicks per click iteration (default: the bundle's).
        guidance_sigma: DeepEdit copies: Gaussian sigma of a click in voxels, for training and serving (default: the
            bundle's).
        label_permutation: DeepEdit copies: share of training iterations on randomly permuted organ labels, with
            clicks (``rep3d_networks.deepedit.PermutedLabelInteraction``; default: none, MONAI's DeepEdit loop).
    """
    if dataset not in SETTINGS:
        raise ValueError(f"dataset must be one of {sorted(SETTINGS)}, got {dataset!r}")
    names = models if isinstance(models, (list, tuple)) else str(models).split(",")  # fire parses "a,b" as a tuple
    chosen = [str(m).strip() for m in names if str(m).strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise ValueError(f"models must be a comma-separated subset of {sorted(MODELS)}, got {models!r}")
    patch, _, default_iterations = SETTINGS[dataset]
    iterations = int(iterations or default_iterations)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    click_options = {
        "click_probability": click_probability,
        "max_interactions": max_interactions,
        "guidance_sigma": guidance_sigma,
        "label_permutation": label_permutation,
    }
    check_click_options(click_options)
    if num_threads > 0:
        torch.set_num_threads(int(num_threads))
    out = Path(output_dir or f"click_models_{dataset}").resolve()
    if not (out / "heldout").exists():
        if dataset == "phantom":
            data_dir, datalist, heldout = phantom_data(out, int(seed), int(num_heldout))
        else:
            shared = Path(shared_data) if shared_data is not None else default_shared_data()
            data_dir, datalist, heldout = real_ct_data(out, shared)
        write_json_files({out / "datalist.json": datalist}, overwrite=True)
        write_heldout(heldout, out)
    data_dir = next(p for p in (out / "data").iterdir() if p.is_dir())
    datalist = json.loads((out / "datalist.json").read_text())

    grid = grid_overrides(dataset)
    train = train_overrides(dataset, data_dir, datalist, iterations, int(seed))
    for model in chosen:
        name, source, network = MODELS[model]
        bundle = out / "bundles" / name
        if (bundle / TRAINED).exists():
            serving = json.loads((bundle / TRAINED).read_text()).get("serving")
            if serving is not None:  # records written before "serving" was kept leave inference.json as it is
                serve_ready(bundle, source, serving)
            print(
                f"[click_models] {name}: trained already ({bundle / TRAINED}), not trained again; inference.json "
                + ("rewritten from the repository's bundle" if serving is not None else "left as it was")
            )
            continue
        fresh_copy(source, bundle, datalist)
        clicks, click_lines = click_overrides(bundle, click_options) if source != "amos_ct" else ({}, [])
        overrides = {**train, **network, **clicks}
        differences = recipe_differences(bundle, overrides) + click_lines
        if model == "dynunet":
            differences.append(
                "network_def: rep3d_networks.Rep3D in the paper recipe, MONAI DynUNet here (MONAI Label's radiology "
                "DeepEdit network, the reference)"
            )
        print(f"[click_models] {name}: settings that differ from the paper recipe ({source}/configs/train.json):")
        for line in differences:
            print(f"[click_models]   {line}")
        began = time.perf_counter()
        best = train_copy(bundle, overrides)
        minutes = (time.perf_counter() - began) / 60
        serving = {
            **network,
            **grid,
            "inferer#roi_size": patch,
            **{k: v for k, v in clicks.items() if k == "guidance_sigma"},
        }
        serve_ready(bundle, source, serving)
        record = {
            "serving": serving,
            "model": model,
            "iterations": iterations,
            "best_validation_dice": best,
            "training_minutes": minutes,
            "differences": differences,
            "run": run_line(),
        }
        (bundle / TRAINED).write_text(json.dumps(record, indent=2))
        print(f"[click_models] {name}: best validation Dice {best:.3f} after {minutes:.1f} min")

    results = write_results(out, dataset, seed)
    print(
        f"[click_models] results: {results}\n[click_models] serve: python apps/rep3d/start_server.py --studies "
        f"{out / 'heldout' / 'images'} --conf bundles_dir {out / 'bundles'} --conf models "
        f"{','.join(MODELS[m][0] for m in MODELS)} --conf device cpu"
    )
    return str(results)


if __name__ == "__main__":
    fire.Fire(main)
