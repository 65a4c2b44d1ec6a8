"""The ``convergence`` study: validation Dice against iterations and wall-clock, to a plateau, for Rep3D and baselines.

Every run is the ``amos_ct`` bundle's own training: its ``train.json`` is parsed in-process by MONAI's
``ConfigParser`` with the quickstart's CPU overrides (:func:`bundle_overrides`) and ``network_def`` replaced by the
run's model, and the bundle's ``SupervisedTrainer`` / ``SupervisedEvaluator`` run as the bundle builds them (its
transforms, ``DiceCELoss``, AdamW, ``ReduceLROnPlateau``, sliding-window validation and ``MeanDice``). In-process
rather than ``python -m monai.bundle run`` because (1) a model object can be passed as ``network_def``, so the Rep3D
variants of one seed start from the same shared weights
(:func:`rep3d_networks.analysis.model_loading.paired_fresh_model`), which a config cannot express, and (2) the run
attaches two handlers of its own to the bundle's engines: a clock (training seconds, validation excluded) with the
Dice curve, and the plateau rule. Besides the quickstart's overrides
(width, 32³ patch, lr 1e-2, no workers) and the dataset's recipe (:data:`RECIPES`: no random affine; class-balanced
crops and class-weighted slabs on the CT) a run validates with a sliding-window
overlap of 0.25 instead of 0.5 and without the bundle's per-validation PNG: on a CPU validation is a large share of
the time.

Plateau rule (:func:`attach_plateau_rule`): MONAI's ``EarlyStopHandler`` (ignite's ``EarlyStopping``) with
``cumulative_delta``: a run stops when ``patience`` validations in a row have not raised the validation Dice by more
than ``min_delta`` above the last value that did; otherwise at ``max_iterations``. The rule is armed only once a
validation reaches ``plateau_floor``: a run that has not started learning (Dice ~0 on the CT slabs) is not "flat".
The stop reason is recorded.

Pairing: for one seed, ``monai.utils.set_determinism(seed)`` is called after the model is built, so every model
of that seed whose forward draws no random numbers (Rep3D, UX-Net, SegResNet) sees the same crops in the same order.

Matched small widths (:data:`MODELS`): every model gets the same first-stage width ``width`` (the quickstart's 8):
Rep3D and UX-Net ``feature_size=width, hidden_size=4·width`` (stages 8-16-32-64, bottleneck 32), SegResNet
``init_filters=width`` (8-16-32-64), SwinUNETR ``feature_size`` = the smallest multiple of 12 ≥ width (it requires
one; 12-24-48-96-192) with ``norm_name="batch"`` (its default InstanceNorm cannot train on the 1³ bottleneck of a
32³ patch, and a 64³ patch would cost 8 times as much). The parameter counts differ (they are printed and
tabulated): Rep3D's 21³ kernels dominate.
"""

import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import EarlyStopHandler
from monai.utils import set_determinism

from rep3d_networks.analysis.convergence_data import RECIPES, StudyData
from rep3d_networks.analysis.model_loading import paired_fresh_model
from rep3d_networks.analysis.reports import write_json
from rep3d_networks.bundles.recipe import AFFINE, CROP, class_balanced_crop, class_weighted_sampling
from rep3d_networks.data.slabs import class_counts
from rep3d_networks.nets import UXNet

NUM_CLASSES = 16  # AMOS: background + 15 organs
REP3D_VARIANTS = ("lrbm", "fixed", "vanilla", "csla")
# Handlers of the bundle's rank-0 lists that the study disables (found by target, see bundle_parser): TrainingCurves
# redraws a PNG after every validation (1.7 s each here, more than a phantom validation; the study draws its own
# figures from result.json), and ignite's progress bars would fill the log of 42 runs.
QUIET_HANDLERS = {
    "train#rank0_handlers": ("rep3d_networks.handlers.TrainingCurves", "ignite.contrib.handlers.ProgressBar"),
    "validate#rank0_handlers": ("ignite.contrib.handlers.ProgressBar",),
}
METRIC = "val_mean_dice"


def rep3d_kwargs(reparam: str, width: int) -> Dict:
    """Rep3D arguments of the study (also written to each run's ``model_config.json`` for the ``erf`` command)."""
    return dict(
        in_channels=1,
        out_channels=NUM_CLASSES,
        feature_size=width,
        depths=[2, 2, 2, 2],
        kernel_size=21,
        hidden_size=4 * width,
        reparam=reparam,
    )


def build_rep3d(reparam: str) -> Callable[[int, int], torch.nn.Module]:
    return lambda width, seed: paired_fresh_model(rep3d_kwargs(reparam, width), seed)


def seeded(factory: Callable[[int], torch.nn.Module]) -> Callable[[int, int], torch.nn.Module]:
    def build(width: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return factory(width)

    return build


def build_segresnet(width: int) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES, init_filters=width)


def build_swinunetr(width: int) -> torch.nn.Module:
    from monai.networks.nets import SwinUNETR

    # norm_name "batch": MONAI's default InstanceNorm cannot train on the 1³ bottleneck of a 32³ patch
    # (it needs > 1 voxel)
    return SwinUNETR(in_channels=1, out_channels=NUM_CLASSES, feature_size=swin_width(width), norm_name="batch")


def swin_width(width: int) -> int:
    """SwinUNETR's ``feature_size`` must be a multiple of 12: the smallest one ≥ ``width``."""
    return 12 * max(1, -(-width // 12))


MODELS: Dict[str, Tuple[str, Callable[[int, int], torch.nn.Module]]] = {
    "lrbm": ("Rep3D LRBM (feature_size {w}, hidden_size {h}, 21³)", build_rep3d("lrbm")),
    "fixed": ("Rep3D fixed prior", build_rep3d("fixed")),
    "vanilla": ("Rep3D vanilla (plain 21³)", build_rep3d("vanilla")),
    "csla": ("Rep3D CSLA (21³ + 3³ branch)", build_rep3d("csla")),
    "uxnet": (
        "3D UX-Net k=7 (feature_size {w}, hidden_size {h})",
        seeded(lambda w: UXNet(1, NUM_CLASSES, kernel_size=7, feature_size=w, hidden_size=4 * w)),
    ),
    "segresnet": ("MONAI SegResNet (init_filters {w})", seeded(build_segresnet)),
    "swinunetr": ("MONAI SwinUNETR (feature_size {s}, BatchNorm)", seeded(build_swinunetr)),
}


def describe(name: str, width: int) -> str:
    """The model's description at ``width``."""
    return MODELS[name][0].format(w=width, h=4 * width, s=swin_width(width))


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class StudySettings:
    """What is trained and how (see ``convergence`` in :mod:`rep3d_networks.analysis.cli` for the meaning)."""

    datasets: Tuple[str, ...] = ("phantom", "ct")
    models: Tuple[str, ...] = tuple(MODELS)
    seeds: Tuple[int, ...] = (0, 1, 2)
    max_iterations: int = 1000
    val_interval: int = 50
    patience: int = 4
    min_delta: float = 0.005
    plateau_floor: float = 0.1
    width: int = 8
    roi_size: Tuple[int, int, int] = (32, 32, 32)
    learning_rate: float = 1e-2
    val_overlap: float = 0.25
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS] + [d for d in self.datasets if d not in RECIPES]
        if unknown:
            raise ValueError(
                f"unknown model(s)/dataset(s) {unknown}: models are {list(MODELS)}, datasets {list(RECIPES)}"
            )
        if self.max_iterations < 1 or self.val_interval < 1 or self.patience < 1:
            raise ValueError(
                f"max_iterations, val_interval and patience must be >= 1, got {self.max_iterations}, "
                f"{self.val_interval}, {self.patience}"
            )
        if any(s % 32 for s in self.roi_size):
            raise ValueError(f"roi_size must be multiples of 32 (SwinUNETR's downsampling), got {self.roi_size}")


def repo_bundle_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "bundles" / "amos_ct"


def bundle_overrides(settings: StudySettings, data: StudyData, run_dir: Path) -> Dict:
    """The train.json keys a run changes: the quickstart's CPU overrides, the dataset's recipe, the run's folders."""
    recipe = RECIPES[data.name]
    overrides = {
        "bundle_root": str(run_dir),
        "dataset_dir": str(data.dataset_dir),
        "datalist": str(data.datalist),
        "roi_size": list(settings.roi_size),
        "learning_rate": float(settings.learning_rate),
        "max_iterations": int(settings.max_iterations),
        "val_interval": int(settings.val_interval),
        # no resume checkpoint (model + optimizer state) in any run: a study resumes run by run, not within one
        "checkpoint_interval": int(settings.max_iterations) + 1,
        "num_workers": 0,
        "cache_rate": 1.0,
        "device": f"$torch.device('{settings.device}')",
        "validate#inferer#overlap": float(settings.val_overlap),
    }
    if recipe.pixdim is not None:
        overrides["pixdim"] = list(recipe.pixdim)
    if recipe.affine_prob is not None:
        overrides[f"{AFFINE}#prob"] = float(recipe.affine_prob)
    if recipe.class_balanced:
        overrides[CROP] = class_balanced_crop(NUM_CLASSES)
    if recipe.class_weighted:
        training = json.loads(Path(data.datalist).read_text())["training"]
        overrides.update(class_weighted_sampling(class_counts(data.dataset_dir, training)))
    return overrides


def bundle_parser(settings: StudySettings, data: StudyData, run_dir: Path, model: torch.nn.Module) -> ConfigParser:
    """The bundle's train.json and metadata with :func:`bundle_overrides` and ``network_def`` = ``model``.

    The bundle's per-validation PNG and progress bars (:data:`QUIET_HANDLERS`) are disabled.

    Raises:
        ValueError: If train.json's :data:`AFFINE` is not RandAffined (the override targets it by index) or
            it has no TrainingCurves handler.
    """
    configs = repo_bundle_dir() / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "train.json"))
    parser.read_meta(str(configs / "metadata.json"))
    if parser[AFFINE]["_target_"] != "RandAffined":
        raise ValueError(f"{configs / 'train.json'}: {AFFINE} is {parser[AFFINE]['_target_']}, expected RandAffined")
    quiet = [
        f"{key}#{index}"
        for key, targets in QUIET_HANDLERS.items()
        for index, handler in enumerate(parser[key])
        if isinstance(handler, dict) and handler.get("_target_") in targets
    ]
    if not any(parser[key]["_target_"] == "rep3d_networks.handlers.TrainingCurves" for key in quiet):
        raise ValueError(f"{configs / 'train.json'}: no rep3d_networks.handlers.TrainingCurves in train#rank0_handlers")
    parser.update(bundle_overrides(settings, data, run_dir))
    for key in quiet:
        parser[f"{key}#_disabled_"] = True
    parser["network_def"] = model
    return parser


def attach_plateau_rule(
    trainer: Engine, evaluator: Engine, patience: int, min_delta: float, floor: float
) -> EarlyStopHandler:
    """Stop ``trainer`` once ``patience`` validations in a row did not beat the reference Dice by more than
    ``min_delta``, counted from the first validation whose Dice reaches ``floor`` (that one is the first reference)."""
    handler = EarlyStopHandler(
        patience=patience,
        score_function=lambda engine: engine.state.metrics[METRIC],
        trainer=trainer,
        min_delta=min_delta,
        cumulative_delta=True,
        epoch_level=True,
    )

    armed = {"on": False}

    def plateau(engine: Engine) -> None:
        # MONAI's handler has no warm-up: it sees the validations from the first one at the floor on
        armed["on"] = armed["on"] or engine.state.metrics[METRIC] >= floor
        if armed["on"]:
            handler(engine)

    evaluator.add_event_handler(Events.EPOCH_COMPLETED, plateau)
    return handler


def attach_curve(trainer: Engine, evaluator: Engine, record: Dict, label: str) -> None:
    """Append ``(iteration, Dice, mean loss since the last validation, training seconds)`` after every validation."""
    clock = {"start": 0.0, "validation": 0.0, "validation_start": 0.0}
    losses: Dict[int, float] = {}

    def loss_of(engine: Engine) -> None:
        output = engine.state.output
        output = output[0] if isinstance(output, list) else output
        losses[engine.state.iteration] = float(output["loss"])

    def validated(_: Engine) -> None:
        now = time.perf_counter()
        train_seconds = clock["validation_start"] - clock["start"] - clock["validation"]
        clock["validation"] += now - clock["validation_start"]
        loss_of(trainer)
        done = record["iterations"][-1] if record["iterations"] else 0
        recent = [v for k, v in losses.items() if k > done]
        record["iterations"].append(trainer.state.iteration)
        record["dice"].append(float(evaluator.state.metrics[METRIC]))
        record["loss"].append(sum(recent) / len(recent))
        record["train_seconds"].append(train_seconds)
        record["validation_seconds"] = clock["validation"]
        print(
            f"[convergence] {label} iteration {record['iterations'][-1]}: Dice {record['dice'][-1]:.3f}, loss "
            f"{record['loss'][-1]:.3f}, train {record['train_seconds'][-1]:.0f} s",
            flush=True,
        )

    trainer.add_event_handler(Events.STARTED, lambda _: clock.update(start=time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, loss_of)
    evaluator.add_event_handler(Events.STARTED, lambda _: clock.update(validation_start=time.perf_counter()))
    evaluator.add_event_handler(Events.COMPLETED, validated)


def run_directory(output_dir: Path, dataset: str, model: str, seed: int) -> Path:
    return output_dir / "runs" / dataset / f"{model}_seed{seed}"


def train_run(settings: StudySettings, data: StudyData, model_name: str, seed: int, output_dir: Path) -> Dict:
    """One bundle training of ``model_name`` with ``seed`` on ``data``; writes and returns its ``result.json``
    record."""
    run_dir = run_directory(output_dir, data.name, model_name, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = MODELS[model_name][1](settings.width, seed)
    if model_name in REP3D_VARIANTS:
        write_json(
            run_dir / "model_config.json",
            {k: v for k, v in rep3d_kwargs(model_name, settings.width).items() if k != "reparam"},
        )
    parser = bundle_parser(settings, data, run_dir, model)
    set_determinism(seed)
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    record = {
        "dataset": data.name,
        "model": model_name,
        "seed": seed,
        "parameters": parameter_count(model),
        "iterations": [],
        "dice": [],
        "loss": [],
        "train_seconds": [],
        "validation_seconds": 0.0,
    }
    attach_curve(trainer, evaluator, record, f"{data.name} {model_name} seed {seed}")
    attach_plateau_rule(trainer, evaluator, settings.patience, settings.min_delta, settings.plateau_floor)
    start = time.perf_counter()
    trainer.run()
    record["wall_seconds"] = time.perf_counter() - start
    record["iterations_run"] = trainer.state.iteration
    record["stopped_by"] = "plateau" if trainer.state.iteration < settings.max_iterations else "max_iterations"
    record["threads"] = torch.get_num_threads()
    record["checkpoint"] = str(run_dir / "models" / "model.pt")  # the bundle's best-Dice checkpoint
    record["settings"] = asdict(settings)
    record["recipe"] = training_recipe(data.name)
    write_json(run_dir / "result.json", record)
    return record


STUDY_ONLY_SETTINGS = ("datasets", "models", "seeds")  # which runs a study holds, not how a run trains


def run_settings(settings: Dict) -> Dict:
    """The settings (as :func:`asdict` / JSON gives them) that decide how one run trains."""
    return {k: v for k, v in json.loads(json.dumps(settings)).items() if k not in STUDY_ONLY_SETTINGS}


def training_recipe(dataset: str) -> Dict:
    """The dataset's :data:`RECIPES` entry as JSON gives it, less its explanation."""
    return {k: v for k, v in json.loads(json.dumps(asdict(RECIPES[dataset]))).items() if k != "why"}


def same_training(record: Dict, settings: StudySettings, data: StudyData) -> bool:
    """Whether ``record`` (a ``result.json``) trained with ``settings``' :func:`run_settings` and the dataset's
    :func:`training_recipe` (a record without one predates the recipe's crop: it is not kept)."""
    return run_settings(record.get("settings", {})) == run_settings(asdict(settings)) and record.get(
        "recipe"
    ) == training_recipe(data.name)


def run_or_load(
    settings: StudySettings, data: StudyData, model_name: str, seed: int, output_dir: Path, num_threads: int
) -> Dict:
    """The run's ``result.json`` if an earlier (interrupted or larger) study wrote it with the same training
    (:func:`same_training`), else :func:`train_run`."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    result = run_directory(output_dir, data.name, model_name, seed) / "result.json"
    if result.is_file():
        record = json.loads(result.read_text())
        if same_training(record, settings, data):
            print(f"[convergence] {data.name} {model_name} seed {seed}: kept {result}", flush=True)
            return record
    return train_run(settings, data, model_name, seed, output_dir)


def run_plan(settings: StudySettings, data: Dict[str, StudyData]) -> List[Tuple[StudyData, str, int]]:
    """The runs, seed-major (every model of seed 0 first), so a study cut short still has complete seeds."""
    return [(data[d], m, s) for d in settings.datasets for s in settings.seeds for m in settings.models]


def worker_pool(workers: int) -> Optional[ProcessPoolExecutor]:
    """``workers`` spawned processes for :func:`run_study` (started on demand), or None for this process."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1 else None


def run_study(
    settings: StudySettings,
    data: Dict[str, StudyData],
    output_dir: Path,
    pool: Optional[ProcessPoolExecutor],
    num_threads: int,
) -> List[Dict]:
    """All runs of :func:`run_plan`: in this process (``pool`` None) or in the processes of ``pool``.

    Raises:
        RuntimeError: Naming every run that failed (the others still finish and are kept).
    """
    plan = run_plan(settings, data)
    if pool is None:
        return [run_or_load(settings, d, m, s, output_dir, num_threads) for d, m, s in plan]
    failures, records = [], []
    futures = [(d.name, m, s, pool.submit(run_or_load, settings, d, m, s, output_dir, num_threads)) for d, m, s in plan]
    for name, model, seed, future in futures:
        try:
            records.append(future.result())
        except Exception:  # any failure of one run: reported below with the run's name
            failures.append(f"{name} {model} seed {seed}:\n{traceback.format_exc()}")
    if failures:
        raise RuntimeError("convergence runs failed:\n" + "\n".join(failures))
    return records


def model_parameters(models: Sequence[str], width: int) -> Dict[str, int]:
    """Parameter count of every model at ``width`` (1 → 16 classes)."""
    return {name: parameter_count(MODELS[name][1](width, 0)) for name in models}


def measure_timing(
    settings: StudySettings,
    data: Dict[str, StudyData],
    output_dir: Path,
    pool: Optional[ProcessPoolExecutor],
    num_threads: int,
    iterations: int = 10,
) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Seconds per training iteration and per validation of every model, measured as the study runs them.

    Each model trains ``iterations`` iterations (seed 0, validations at the half and at the end) in the study's
    ``pool``, so the runs compete for the cores as in the study. Seconds per iteration are taken over the second
    half (after the warm-up).
    """
    half = max(1, iterations // 2)
    short = replace(settings, seeds=(0,), max_iterations=2 * half, val_interval=half, patience=10**6)
    records = run_study(short, data, output_dir / "timing", pool, num_threads)
    timing: Dict[str, Dict[str, Dict[str, float]]] = {}
    for r in records:
        timing.setdefault(r["dataset"], {})[r["model"]] = {
            "seconds_per_iteration": (r["train_seconds"][-1] - r["train_seconds"][0]) / half,
            "seconds_per_validation": r["validation_seconds"] / len(r["iterations"]),
        }
    return timing


def plan_hours(
    timing: Dict[str, Dict[str, Dict[str, float]]], settings: StudySettings, workers: int, max_iterations: int
) -> float:
    """Wall-clock hours of the study if every run reaches ``max_iterations`` and ``workers`` processes share the runs
    evenly."""
    return time_plan(timing, replace(settings, max_iterations=max_iterations), workers)["hours"]


def fitting_cap(
    timing: Dict[str, Dict[str, Dict[str, float]]], settings: StudySettings, workers: int, budget_hours: float
) -> int:
    """The largest multiple of ``val_interval`` ≤ ``max_iterations`` whose :func:`plan_hours` fits ``budget_hours``.

    Raises:
        ValueError: If not even one validation interval fits.
    """
    cap = settings.max_iterations - settings.max_iterations % settings.val_interval
    while cap >= settings.val_interval and plan_hours(timing, settings, workers, cap) > budget_hours:
        cap -= settings.val_interval
    if cap < settings.val_interval:
        raise ValueError(
            f"not even {settings.val_interval} iterations per run fit "
            f"in {budget_hours} h: use fewer models, seeds or datasets"
        )
    return cap


def time_plan(timing: Dict[str, Dict[str, Dict[str, float]]], settings: StudySettings, workers: int) -> Dict:
    """Expected study time from measured seconds per iteration and per validation (:func:`measure_timing`).

    Returns:
        ``{"rows": [[dataset, model, runs, iterations, s/it, validations, s/validation, hours]], "worker_hours",
        "hours", "workers"}``.
    """
    rows, total = [], 0.0
    validations = settings.max_iterations // settings.val_interval
    for dataset in settings.datasets:
        for model in settings.models:
            t = timing[dataset][model]
            seconds = len(settings.seeds) * (
                settings.max_iterations * t["seconds_per_iteration"] + validations * t["seconds_per_validation"]
            )
            total += seconds
            rows.append(
                [
                    dataset,
                    model,
                    len(settings.seeds),
                    settings.max_iterations,
                    t["seconds_per_iteration"],
                    validations,
                    t["seconds_per_validation"],
                    seconds / 3600,
                ]
            )
    return {"rows": rows, "worker_hours": total / 3600, "hours": total / 3600 / max(1, workers), "workers": workers}
