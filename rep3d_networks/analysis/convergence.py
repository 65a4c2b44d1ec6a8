"""The ``convergence`` experiment: a tiny Table 7 (validation Dice of vanilla / fixed / LRBM Rep3D over iterations).

Every run trains the same small Rep3D (only ``reparam`` differs) with AdamW and MONAI's ``DiceCELoss`` on
random crops of the training slabs, and measures the validation Dice (MONAI ``DiceMetric``, background
excluded, classes absent from the validation label ignored) by sliding-window inference on the held-out
slab at fixed iterations. For a given seed every variant starts from the same shared weights and sees the same
crops in the same order (:func:`paired_model`), so the variants of one seed differ only by the re-parameterization.
"""

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.transforms import AsDiscrete
from monai.utils import set_determinism

from rep3d_networks.analysis.convergence_data import slab_split, train_transforms, validation_transforms
from rep3d_networks.analysis.model_loading import paired_fresh_model
from rep3d_networks.analysis.reports import mean_std
from rep3d_networks.nets import Rep3D

NUM_CLASSES = 16  # AMOS: background + 15 organs
TABLE7_FRACTIONS = (1 / 6, 1 / 3, 2 / 3, 1.0)  # 10k, 20k, 40k, 60k of 60k iterations


@dataclass
class ConvergenceSettings:
    """What is trained and how (see ``convergence`` in :mod:`rep3d_networks.analysis.cli` for the meaning)."""

    variants: Tuple[str, ...] = ("vanilla", "fixed", "lrbm")
    seeds: Tuple[int, ...] = (0, 1, 2)
    iterations: int = 240
    eval_at: Tuple[int, ...] = ()
    crop: Tuple[int, int, int] = (32, 32, 32)
    num_samples: int = 2
    feature_size: int = 8
    hidden_size: int = 32
    kernel_size: int = 21
    learning_rate: float = 1e-3
    weight_decay: float = 0.08
    device: str = "cpu"
    conv_method: str = "auto"
    eval_points: List[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        points = self.eval_at or [max(1, round(f * self.iterations)) for f in TABLE7_FRACTIONS]
        self.eval_points = sorted({int(p) for p in points if 1 <= int(p) <= self.iterations} | {self.iterations})

    def model_kwargs(self, reparam: str) -> Dict:
        """Rep3D keyword arguments of one variant (also written to ``model_config.json`` for ``erf``)."""
        return dict(
            in_channels=1, out_channels=NUM_CLASSES, feature_size=self.feature_size, depths=[2, 2, 2, 2],
            kernel_size=self.kernel_size, hidden_size=self.hidden_size, reparam=reparam, conv_method=self.conv_method,
        )


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor (MONAI's MetaTensor tracks metadata through every op, which slows the network down)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def paired_model(settings: ConvergenceSettings, variant: str, seed: int) -> Rep3D:
    """The model of ``variant`` starting from the same shared weights as every other variant with this ``seed``."""
    return paired_fresh_model(settings.model_kwargs(variant), seed)


def seeded_loader(dataset: CacheDataset, seed: int) -> DataLoader:
    """A shuffling loader whose order and random crops depend only on ``seed`` (call right after ``set_determinism``)."""
    return DataLoader(dataset, batch_size=1, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(seed))


def endless(loader: DataLoader):
    while True:
        yield from loader


@torch.no_grad()
def validation_dice(model: torch.nn.Module, val_data: CacheDataset, settings: ConvergenceSettings) -> Tuple[float, List[float]]:
    """``(mean Dice over present foreground classes, per-class Dice with NaN for absent classes)`` on the validation data."""
    model.eval()
    to_prediction, to_label = AsDiscrete(argmax=True, to_onehot=NUM_CLASSES), AsDiscrete(to_onehot=NUM_CLASSES)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    for item in val_data:
        image = plain(item["image"])[None].to(settings.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # raised inside MONAI's sliding window
            logits = sliding_window_inference(image, settings.crop, sw_batch_size=4, predictor=model, overlap=0.25)
        metric(y_pred=[to_prediction(logits[0])], y=[to_label(plain(item["label"]).to(settings.device))])
    per_class = metric.aggregate().cpu().numpy()  # [cases, classes - 1]
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes absent from the validation label
        classes = np.nanmean(per_class, axis=0)
    mean = float(np.nanmean(classes)) if np.isfinite(classes).any() else float("nan")
    return mean, [float(v) for v in classes]


def train_run(
    variant: str, seed: int, settings: ConvergenceSettings, train_data: CacheDataset, val_data: CacheDataset, checkpoint: Optional[Path]
) -> Dict:
    """Train one variant with one seed; Dice, mean loss and cumulative training time (data loading, forward, backward
    and optimizer step; validation excluded) at every evaluation point."""
    set_determinism(seed)
    batches = endless(seeded_loader(train_data, seed))
    model = paired_model(settings, variant, seed).to(settings.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    record = {"variant": variant, "seed": seed, "iterations": [], "dice": [], "loss": [], "train_seconds": [], "eval_seconds": 0.0}
    train_seconds, losses = 0.0, []
    model.train()
    for iteration in range(1, settings.iterations + 1):
        start = time.perf_counter()
        batch = next(batches)
        image, label = plain(batch["image"]).to(settings.device), plain(batch["label"]).to(settings.device)
        loss = loss_function(model(image), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_seconds += time.perf_counter() - start
        losses.append(loss.item())
        if iteration in settings.eval_points:
            start = time.perf_counter()
            dice, per_class = validation_dice(model, val_data, settings)
            record["eval_seconds"] += time.perf_counter() - start
            record["iterations"].append(iteration)
            record["dice"].append(dice)
            record["loss"].append(float(np.mean(losses)))
            record["train_seconds"].append(train_seconds)
            record["final_per_class"] = per_class
            losses = []
            print(f"[convergence] {variant} seed {seed} iteration {iteration}: val Dice {dice:.3f}, loss {record['loss'][-1]:.3f}, "
                  f"train {train_seconds:.0f} s", flush=True)
    if checkpoint is not None:
        torch.save(model.state_dict(), checkpoint)
        record["checkpoint"] = str(checkpoint)
    return record


def run_convergence(settings: ConvergenceSettings, dataset_dir: Path, val_case: int, checkpoint_dir: Optional[Path]) -> Dict:
    """All ``variants × seeds`` runs on the slab split of ``dataset_dir``.

    Returns:
        ``{"settings": {...}, "data": {"train_cases", "val_cases", "val_classes"}, "runs": [train_run(...), ...]}``.
    """
    train_items, val_items = slab_split(dataset_dir, val_case)
    train_data = CacheDataset(train_items, train_transforms(settings.crop, settings.num_samples), cache_rate=1.0, num_workers=0, progress=False)
    val_data = CacheDataset(val_items, validation_transforms(), cache_rate=1.0, num_workers=0, progress=False)
    val_classes = sorted(int(v) for v in np.unique(np.concatenate([np.unique(item["label"].numpy()) for item in val_data])) if v > 0)
    runs = []
    for seed in settings.seeds:
        for variant in settings.variants:
            checkpoint = None if checkpoint_dir is None else checkpoint_dir / f"{variant}_seed{seed}.pt"
            runs.append(train_run(variant, seed, settings, train_data, val_data, checkpoint))
    data = {"train_cases": [i["name"] for i in train_items], "val_cases": [i["name"] for i in val_items], "val_classes": val_classes}
    return {"settings": asdict(settings), "data": data, "runs": runs}


def curves(results: Dict) -> Dict[str, Dict[str, list]]:
    """``{variant: {"iterations", "dice": [checkpoint][seed], "loss": [checkpoint][seed], "minutes": [seed]}}``."""
    grouped: Dict[str, Dict[str, list]] = {}
    for run in results["runs"]:
        curve = grouped.setdefault(run["variant"], {"iterations": run["iterations"], "dice": [], "loss": [], "minutes": []})
        curve["dice"].append(run["dice"])
        curve["loss"].append(run["loss"])
        curve["minutes"].append(run["train_seconds"][-1] / 60)
    for curve in grouped.values():
        curve["dice"] = [list(v) for v in zip(*curve["dice"])]
        curve["loss"] = [list(v) for v in zip(*curve["loss"])]
    return grouped


def summary_rows(results: Dict) -> Tuple[List[str], List[List[str]]]:
    """Table 7 layout: one row per variant, training minutes and Dice (mean ± std over seeds) per evaluation point."""
    grouped = curves(results)
    points: Sequence[int] = results["settings"]["eval_points"]
    header = ["variant", "seeds", "train time (min)"] + [f"{p} it" for p in points]
    rows = [
        [variant, str(len(curve["minutes"])), mean_std(curve["minutes"], 1)] + [mean_std(values) for values in curve["dice"]]
        for variant, curve in grouped.items()
    ]
    return header, rows


def per_run_rows(results: Dict) -> Tuple[List[str], List[List[str]]]:
    """One row per run: variant, seed, Dice per evaluation point, training and validation seconds."""
    points = results["settings"]["eval_points"]
    header = ["variant", "seed"] + [f"{p} it" for p in points] + ["train s", "val s"]
    rows = [
        [run["variant"], str(run["seed"])] + [f"{d:.3f}" for d in run["dice"]] + [f"{run['train_seconds'][-1]:.0f}", f"{run['eval_seconds']:.0f}"]
        for run in results["runs"]
    ]
    return header, rows
