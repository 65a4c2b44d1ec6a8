"""The paper's recipe as MONAI bundle configs, for any dataset: train, evaluate, inference, ensemble, multi-GPU.

Each function returns one config file's content for a :class:`~rep3d_networks.data.specs.DatasetSpec`; only
``dataset_dir``, ``num_classes``, ``pixdim`` and ``intensity_range`` depend on the dataset. Handlers are chosen by
config id, zoo style: ``train#handlers`` / ``validate#handlers`` run on every rank (they take part in collective
steps or must see every rank's state), ``train#rank0_handlers`` / ``validate#rank0_handlers`` only log and write files,
and ``multi_gpu_*.json`` keep the latter on rank 0 alone.
"""

from typing import Any, Dict, List

from rep3d_networks.data.specs import DatasetSpec

Config = Dict[str, Any]
KEYS = ["image", "label"]
FROM_LOSS = "$monai.handlers.from_engine(['loss'], first=True)"
FROM_PRED_LABEL = "$monai.handlers.from_engine(['pred', 'label'])"
DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
RANK_DEVICE = "$torch.device('cuda:' + os.environ['LOCAL_RANK']) if torch.cuda.is_available() else torch.device('cpu')"
TRAIN_STATE = {
    "model": "@network",
    "optimizer": "@optimizer",
    "lr_scheduler": "@lr_scheduler",
    "best_model_saver": "@validate#checkpoint_saver",
}
ROI_SIZE = (96, 96, 96)
"""The paper's training patch and sliding window (voxels): ``roi_size`` of ``train.json``, the inferer's of
``inference.json``, the ``spatial_shape`` of ``metadata.json``."""
WEIGHT_DECAY = 0.08
"""The paper's AdamW weight decay (Table 5), also the default of the ``lr-field`` analysis."""


def target(name: str, **kwargs: Any) -> Config:
    """``{"_target_": name, **kwargs}``: one config component."""
    return {"_target_": name, **kwargs}


def dataset_keys(data: DatasetSpec) -> Config:
    """The config keys that differ between datasets."""
    return {
        "dataset_dir": f"/workspace/data/{data.source_dir}",
        "num_classes": data.num_classes,
        "pixdim": list(data.pixdim),
        "intensity_range": list(data.intensity_range),
    }


def progress_bar() -> Config:
    """ignite's ``ProgressBar`` (tqdm, on stderr): iterations of the engine it is attached to, on the command line."""
    return target("ignite.contrib.handlers.ProgressBar")


def tracking_store() -> str:
    """``tracking_uri`` for ``--tracking mlflow``: an SQLite store in ``output_dir``. MONAI's default, a
    ``file://`` store, is refused by MLflow 3 unless ``MLFLOW_ALLOW_FILE_STORE=true``; ``--tracking_uri`` overrides."""
    return "$sqlite_store(@output_dir)"


def network_def(**extra: Any) -> Config:
    """The paper's Rep3D (feature size 48, kernel 21, LRBM)."""
    return target(
        "rep3d_networks.Rep3D",
        in_channels=1,
        out_channels="@num_classes",
        feature_size=48,
        depths=[2, 2, 2, 2],
        kernel_size=21,
        hidden_size=768,
        reparam="lrbm",
        **extra,
    )


def intensity_transforms() -> List[Config]:
    """Window clipped to [0, 1], then (x - p1) / (p99 - p1)."""
    return [
        target(
            "ScaleIntensityRanged",
            keys="image",
            a_min="$@intensity_range[0]",
            a_max="$@intensity_range[1]",
            b_min=0.0,
            b_max=1.0,
            clip=True,
        ),
        target("ScaleIntensityRangePercentilesd", keys="image", lower=1, upper=99, b_min=0.0, b_max=1.0, clip=False),
    ]


def train_transforms() -> Config:
    """``train#deterministic_transforms`` and ``train#random_transforms``."""
    deterministic = [
        target("rep3d_networks.transforms.LoadVolumed", keys=KEYS, image_only=True),
        target("EnsureChannelFirstd", keys=KEYS),
        target("rep3d_networks.transforms.ValidateVolumed", keys=KEYS, label_key="label", num_classes="@num_classes"),
        target("Orientationd", keys=KEYS, axcodes="RAS"),
        # MONAI's Spacingd, safe with DeepEdit's label_names on MONAI 1.6 (see rep3d_networks.transforms.Spacingd)
        target("rep3d_networks.transforms.Spacingd", keys=KEYS, pixdim="@pixdim", mode=["bilinear", "nearest"]),
        *intensity_transforms(),
        target("CropForegroundd", keys=KEYS, source_key="image", allow_smaller=True),
        target("SpatialPadd", keys=KEYS, spatial_size="@roi_size"),
        target("EnsureTyped", keys=KEYS),
    ]
    random = [
        target(
            "RandCropByPosNegLabeld",
            keys=KEYS,
            label_key="label",
            spatial_size="@roi_size",
            pos=1,
            neg=1,
            num_samples="@num_samples",
            image_key="image",
            image_threshold=0,
        ),
        target("RandShiftIntensityd", keys="image", offsets=0.1, prob=0.5),
        target(
            "RandAffined",
            keys=KEYS,
            prob=0.5,
            spatial_size="@roi_size",
            rotate_range=["$np.pi / 6"] * 3,
            scale_range=[0.1, 0.1, 0.1],
            mode=["bilinear", "nearest"],
            padding_mode="zeros",
            cache_grid=True,
        ),
    ]
    return {"deterministic_transforms": deterministic, "random_transforms": random}


CROP = "train#random_transforms#0"  # the config id of train_transforms' RandCropByPosNegLabeld
AFFINE = "train#random_transforms#2"  # the config id of train_transforms' RandAffined


def class_balanced_crop(num_classes: int) -> Config:
    """Not the paper's: a replacement for :data:`CROP` for small CPU runs on real CT (``rep3d_networks.real_ct``, the
    ``convergence`` study's ``ct``). MONAI's RandCropByLabelClassesd with equal ratios centres each crop on a voxel of a
    class drawn uniformly from the classes present (MONAI drops absent ones), so a 300-voxel adrenal gland is a crop
    centre as often as the liver; the recipe's pos/neg crop centres half its crops on a random foreground voxel, mostly
    liver."""
    return target(
        "RandCropByLabelClassesd",
        keys=KEYS,
        label_key="label",
        spatial_size="@roi_size",
        num_classes=int(num_classes),
        num_samples="@num_samples",
        image_key="image",
        image_threshold=0,
        warn=False,
    )


SAMPLER = "train#dataloader#sampler"  # not set in train.json: the dataloader shuffles


def class_weighted_sampling(class_counts: List[int]) -> Config:
    """Not the paper's: train.json overrides for the real-CT slabs (``rep3d_networks.real_ct``, the ``convergence``
    study's ``ct``), with :func:`class_balanced_crop`. torch's ``WeightedRandomSampler`` as :data:`SAMPLER` (and
    ``shuffle`` off, which a sampler requires) draws training case ``i`` in proportion to ``class_counts[i]``, the
    number of classes it holds (background included); with the crop's uniform class draw every (case, class) pair is
    then equally likely, so an organ is a crop centre in proportion to the cases that hold it. With uniform shuffling,
    one organ-rich slab among five of pelvis and air gets a sixth of the iterations."""
    if not class_counts or min(class_counts) < 1:
        raise ValueError(f"class_counts must be positive, one per training case, got {class_counts}")
    sampler = target(
        "torch.utils.data.WeightedRandomSampler",
        weights=[float(c) for c in class_counts],
        num_samples=len(class_counts),
        replacement=True,
    )
    return {SAMPLER: sampler, "train#dataloader#shuffle": False}


def data_pipeline(section: str, split: str, shuffle: bool) -> Config:
    """``dataset`` and ``dataloader`` of ``train`` or ``validate``."""
    return {
        "dataset": target(
            "CacheDataset",
            data=f"$load_datalist(@datalist, '{split}', @dataset_dir)",
            transform=f"@{section}#preprocessing",
            cache_rate="@cache_rate",
            num_workers="@num_workers",
        ),
        "dataloader": target(
            "DataLoader", dataset=f"@{section}#dataset", batch_size=1, shuffle=shuffle, num_workers="@num_workers"
        ),
    }


def train_section() -> Config:
    """``train``: data, every-rank and rank-0 handlers, ``SupervisedTrainer``."""
    return {
        **train_transforms(),
        "preprocessing": target("Compose", transforms="$@train#deterministic_transforms + @train#random_transforms"),
        **data_pipeline("train", "training", shuffle=True),
        "inferer": target("SimpleInferer"),
        "postprocessing": target(
            "Compose",
            transforms=[
                target("Activationsd", keys="pred", softmax=True),
                target(
                    "AsDiscreted",
                    keys=["pred", "label"],
                    argmax=[True, False],
                    to_onehot="$[@num_classes, @num_classes]",
                ),
            ],
        ),
        "handlers": [
            target(
                "rep3d_networks.handlers.ResumeCheckpointLoader",
                _disabled_="$@resume_checkpoint is None",
                load_path="@resume_checkpoint",
                load_dict=dict(TRAIN_STATE),
                engine_key="trainer",
                map_location="@device",
                strict=True,
            ),
            target("ValidationHandler", validator="@validate#evaluator", epoch_level=False, interval="@val_interval"),
        ],
        "rank0_handlers": [
            progress_bar(),
            target("StatsHandler", tag_name="train_loss", output_transform=FROM_LOSS),
            target("TensorBoardStatsHandler", log_dir="@output_dir", tag_name="train_loss", output_transform=FROM_LOSS),
            target(
                "rep3d_networks.handlers.TrainingCurves",
                output_dir="@output_dir",
                evaluator="@validate#evaluator",
                metric="val_mean_dice",
                meta="@_meta_",
            ),
            target(
                "rep3d_networks.handlers.AtomicCheckpointSaver",
                save_dir="@resume_dir",
                save_dict=dict(TRAIN_STATE),
                engine_key="trainer",
                file_prefix="resume",
                save_interval="@checkpoint_interval",
                epoch_level=False,
                n_saved=2,
            ),
        ],
        "trainer": target(
            "SupervisedTrainer",
            max_epochs="$max(1, @max_iterations // @val_interval)",
            epoch_length="@val_interval",
            device="@device",
            train_data_loader="@train#dataloader",
            network="@network",
            loss_function="@loss",
            optimizer="@optimizer",
            inferer="@train#inferer",
            postprocessing="@train#postprocessing",
            train_handlers="$@train#handlers + @train#rank0_handlers",
            amp="@amp",
        ),
    }


def validate_section() -> Config:
    """``validate``: sliding-window validation, best-model saver, LR schedule."""
    return {
        "preprocessing": target("Compose", transforms="%train#deterministic_transforms"),
        **data_pipeline("validate", "validation", shuffle=False),
        # float32 as MONAI's SlidingWindowInferer (the evaluator's ``amp`` still applies on CUDA); on a CPU a wide
        # network runs channels-last for the call (rep3d_networks.nets.layout) and is put back for training
        "inferer": target(
            "rep3d_networks.inferers.PrecisionSlidingWindowInferer",
            roi_size="@roi_size",
            sw_batch_size=2,
            overlap=0.5,
            precision="float32",
        ),
        "postprocessing": "%train#postprocessing",
        "checkpoint_saver": target(
            "rep3d_networks.handlers.AtomicCheckpointSaver",
            save_dir="@ckpt_dir",
            save_dict={"model": "@network"},
            save_key_metric=True,
            key_metric_filename="model.pt",
        ),
        "handlers": [
            target(
                "LrScheduleHandler",
                lr_scheduler="@lr_scheduler",
                epoch_level=True,
                step_transform="$lambda engine: engine.state.metrics['val_mean_dice']",
            ),
        ],
        "rank0_handlers": [
            progress_bar(),
            target("StatsHandler", iteration_log=False),
            target("TensorBoardStatsHandler", log_dir="@output_dir", iteration_log=False),
            "@validate#checkpoint_saver",
        ],
        "key_metric": {"val_mean_dice": target("MeanDice", include_background=False, output_transform=FROM_PRED_LABEL)},
        "evaluator": target(
            "SupervisedEvaluator",
            device="@device",
            val_data_loader="@validate#dataloader",
            network="@network",
            inferer="@validate#inferer",
            postprocessing="@validate#postprocessing",
            key_val_metric="@validate#key_metric",
            val_handlers="$@validate#handlers + @validate#rank0_handlers",
            amp="@amp",
        ),
    }


def train(data: DatasetSpec) -> Config:
    """``train.json``: the paper's training recipe (appendix A.2)."""
    return {
        "imports": [
            "$import glob",
            "$import os",
            "$import numpy as np",
            "$import ignite",
            "$from rep3d_networks.data.loading import load_datalist",
            "$from rep3d_networks.handlers import resume_checkpoint",
            "$from rep3d_networks.tracking import sqlite_store",
        ],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "output_dir": "$@bundle_root + '/eval'",
        "resume_dir": "$@ckpt_dir + '/resume'",
        "tracking_uri": tracking_store(),
        "resume_checkpoint": "$resume_checkpoint(@resume_dir, @resume)",
        "dataset_dir": dataset_keys(data)["dataset_dir"],
        "fold": 0,
        "datalist": "$@bundle_root + '/configs/datalist_fold' + str(@fold) + '.json'",
        **{k: v for k, v in dataset_keys(data).items() if k != "dataset_dir"},
        "roi_size": list(ROI_SIZE),
        "num_samples": 2,
        "max_iterations": 60000,
        "val_interval": 500,
        "checkpoint_interval": 500,
        "resume": False,
        "learning_rate": 0.0001,
        "num_workers": 4,
        "cache_rate": 1.0,
        "amp": "$torch.cuda.is_available()",
        "device": DEVICE,
        "network_def": network_def(),
        "network": "$@network_def.to(@device)",
        "loss": target("DiceCELoss", to_onehot_y=True, softmax=True),
        "optimizer": target(
            "torch.optim.AdamW",
            params="$@network.parameters()",
            lr="@learning_rate",
            betas=[0.9, 0.999],
            eps=1e-08,
            weight_decay=WEIGHT_DECAY,
        ),
        "lr_scheduler": target(
            "torch.optim.lr_scheduler.ReduceLROnPlateau", optimizer="@optimizer", mode="max", factor=0.9, patience=10
        ),
        "train": train_section(),
        "validate": validate_section(),
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@train#trainer.run()"],
        "training": "@run",
    }


CLOSE_TRACKING = "$[h.close() for h in @validate#handlers if isinstance(h, monai.handlers.MLFlowHandler)]"
"""Ends the MLflow run of ``--tracking mlflow`` after an evaluation (the default settings close only the trainer's)."""


def evaluate() -> Config:
    """``evaluate.json`` (on top of ``train.json``): the best checkpoint on the test split, Dice and HD95 per case."""
    metrics = ["val_mean_dice", "val_hd95"]
    return {
        "validate#dataset#data": "$load_datalist(@datalist, 'test', @dataset_dir)",
        "validate#handlers": [
            target(
                "CheckpointLoader", load_path="$@ckpt_dir + '/model.pt'", load_dict={"model": "@network"}, strict=True
            ),
            # every rank: MetricsSaver gathers the case names of all ranks before rank 0 writes
            target(
                "MetricsSaver",
                save_dir="@output_dir",
                metrics=metrics,
                metric_details=metrics,
                batch_transform="$lambda x: [xx['image'].meta for xx in x]",
                summary_ops="*",
            ),
        ],
        "validate#rank0_handlers": [
            progress_bar(),
            target("StatsHandler", iteration_log=False),
            target(
                "rep3d_networks.handlers.MetricsSummary",
                output_dir="@output_dir",
                metrics={"val_mean_dice": "Dice", "val_hd95": "HD95 (mm)"},
                meta="@_meta_",
            ),
        ],
        "validate#additional_metrics": {
            "val_hd95": target(
                "rep3d_networks.handlers.HausdorffDistanceMM",
                include_background=False,
                percentile=95,
                output_transform=FROM_PRED_LABEL,
            ),
        },
        "validate#evaluator#additional_metrics": "@validate#additional_metrics",
        "run": ["$@validate#evaluator.run()"],
        # --tracking mlflow gives the evaluator a handler that MONAI leaves open (its run would stay RUNNING)
        "finalize": [CLOSE_TRACKING],
    }


OUTPUT_KEYS = {"max_voxels": 300000000, "label_interp": "bilinear", "save_probabilities": False}
"""``inference.json`` keys of the input budget and output stage (see :func:`inference_postprocessing`)."""
SPEED_DEFAULTS = {"fast": False, "sw_overlap": 0.5, "sw_batch_size": 4}
"""``inference.json``'s ``displayable_configs``: the per-request speed settings (3D Slicer lists them as options)."""
FAST_PRESET = {"fast_overlap": 0.25}
"""What ``fast`` changes: the sliding-window overlap is at most ``fast_overlap`` (0.25: 24 instead of 60 windows of
96³ on the shared ``example_ct``). Same windows and grid: no model is trained for a lower resolution."""
FAST_OR_OVERLAP = (
    "$min(@displayable_configs#sw_overlap, @fast_overlap) if str(@fast).lower() in ('true', '1', 'yes') "
    "else @displayable_configs#sw_overlap"
)
UNLESS_PROBABILITIES = "$str(@save_probabilities).lower() not in ('true', '1', 'yes')"


def inference_postprocessing() -> List[Config]:
    """Labels on each input's grid at O(voxels) memory (``InvertToLabelsd``, ``label_interp`` bilinear or nearest);
    with ``save_probabilities`` also every class's probability on the input grid (float32, 4 × classes bytes per
    voxel). The first transform is the softmax (``inference_ensemble.json`` replaces it by the fold mean)."""
    save = dict(
        output_dir="@output_dir",
        output_ext="@output_ext",
        resample=False,
        separate_folder=False,
        data_root_dir="$output_root(@datalist, @dataset_dir)",
    )
    return [
        target("Activationsd", keys="pred", softmax=True),
        target("CopyItemsd", _disabled_=UNLESS_PROBABILITIES, keys="pred", names="probabilities"),
        target(
            "Invertd",
            _disabled_=UNLESS_PROBABILITIES,
            keys="probabilities",
            transform="@preprocessing",
            orig_keys="image",
            nearest_interp=False,
            to_tensor=True,
        ),
        target("Lambdad", _disabled_=UNLESS_PROBABILITIES, keys="probabilities", func="$background_outside_crop"),
        target(
            "SaveImaged",
            _disabled_=UNLESS_PROBABILITIES,
            keys="probabilities",
            output_postfix="prob",
            output_dtype="$np.float32",
            **save,
        ),
        target(
            "rep3d_networks.transforms.InvertToLabelsd",
            keys="pred",
            transform="@preprocessing",
            orig_keys="image",
            interp="@label_interp",
        ),
        target("SaveImaged", keys="pred", output_postfix="@output_postfix", output_dtype="@output_dtype", **save),
    ]


def inference(data: DatasetSpec) -> Config:
    """``inference.json``: the folded network, sliding window, labels saved in each input's geometry."""
    return {
        "imports": [
            "$import glob",
            "$import os",
            "$import numpy as np",
            "$import copy",
            "$from rep3d_networks.transforms import output_root",
            "$from rep3d_networks.transforms import background_outside_crop",
            "$from rep3d_networks.tracking import sqlite_store",
        ],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "tracking_uri": tracking_store(),
        "dataset_dir": dataset_keys(data)["dataset_dir"],
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "output_ext": ".nii.gz",
        "output_postfix": "seg",
        "output_dtype": "$np.uint8",
        "load_pretrain": True,
        "num_workers": 4,
        **{k: v for k, v in dataset_keys(data).items() if k != "dataset_dir"},
        **OUTPUT_KEYS,
        # float32 | bfloat16 | auto (bfloat16 on CPUs with AVX512-BF16 / AMX, float16 AMP on CUDA): see
        # rep3d_networks.inferers; the network alone runs under autocast, the labels are written as in float32
        "precision": "auto",
        "device": DEVICE,
        "network_def": network_def(deploy=True),
        "network": "$@network_def.to(@device)",
        "preprocessing": target(
            "Compose",
            transforms=[
                target(
                    "rep3d_networks.transforms.LoadVolumed", keys="image", image_only=True, max_voxels="@max_voxels"
                ),
                target("EnsureChannelFirstd", keys="image"),
                target(
                    "rep3d_networks.transforms.ValidateVolumed", keys="image", label_key=None, max_voxels="@max_voxels"
                ),
                target("Orientationd", keys="image", axcodes="RAS"),
                # MONAI's Spacingd, safe under MONAI Label on MONAI 1.6 (see rep3d_networks.transforms.Spacingd)
                target("rep3d_networks.transforms.Spacingd", keys="image", pixdim="@pixdim", mode="bilinear"),
                *intensity_transforms(),
                # the body crop of training and evaluation: without it the network sees windows of air it never saw
                # (on the quickstart phantom inferred Dice fell from 0.90 to 0.55); the output stage inverts it
                target("CropForegroundd", keys="image", source_key="image", allow_smaller=True),
                target("EnsureTyped", keys="image"),
            ],
        ),
        "dataset": target(
            "Dataset", data="$[{'image': os.path.normpath(i)} for i in @datalist]", transform="@preprocessing"
        ),
        "dataloader": target("DataLoader", dataset="@dataset", batch_size=1, shuffle=False, num_workers="@num_workers"),
        # per request in MONAI Label (Slicer's options of the model); on the command line
        # --displayable_configs#sw_overlap 0.25 etc., --fast true for the fast preset, --precision float32
        "displayable_configs": {**SPEED_DEFAULTS, "precision": "@precision"},
        "fast": "@displayable_configs#fast",
        **FAST_PRESET,
        "inferer": target(
            "rep3d_networks.inferers.PrecisionSlidingWindowInferer",
            roi_size=list(ROI_SIZE),
            sw_batch_size="@displayable_configs#sw_batch_size",
            overlap=FAST_OR_OVERLAP,
            precision="@displayable_configs#precision",
            progress=True,
        ),
        "postprocessing": target("Compose", transforms=inference_postprocessing()),
        "handlers": [
            target(
                "CheckpointLoader",
                _disabled_="$str(@load_pretrain).lower() in ('false', '0', 'no')",
                load_path="$@bundle_root + '/models/model.pt'",
                load_dict={"model": "@network"},
                strict=True,
            ),
            target("StatsHandler", iteration_log=False),
        ],
        "evaluator": target(
            "SupervisedEvaluator",
            device="@device",
            val_data_loader="@dataloader",
            network="@network",
            inferer="@inferer",
            postprocessing="@postprocessing",
            val_handlers="@handlers",
        ),
        "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', True)"],
        "run": ["$@evaluator.run()"],
    }


def inference_ensemble() -> Config:
    """``inference_ensemble.json`` (on top of ``inference.json``): mean softmax of the five fold models."""
    return {
        "num_folds": 5,
        "fold_models": "$[@bundle_root + '/models/fold' + str(k) + '/model.pt' for k in range(@num_folds)]",
        "fold_pred_keys": "$['pred' + str(k) for k in range(@num_folds)]",
        "fold_networks": "$[copy.deepcopy(@network_def).to(@device) for _ in range(@num_folds)]",
        "postprocessing#transforms#0": target(
            "Compose",
            transforms=[
                target("Activationsd", keys="@fold_pred_keys", softmax=True),
                target("MeanEnsembled", keys="@fold_pred_keys", output_key="pred"),
            ],
        ),
        "handlers": "$[monai.handlers.CheckpointLoader(load_path=p, load_dict={'model': n}, strict=True) for p, n in "
        "zip(@fold_models, @fold_networks)] + [monai.handlers.StatsHandler(iteration_log=False)]",
        "evaluator": target(
            "EnsembleEvaluator",
            device="@device",
            val_data_loader="@dataloader",
            networks="@fold_networks",
            pred_keys="@fold_pred_keys",
            inferer="@inferer",
            postprocessing="@postprocessing",
            val_handlers="@handlers",
        ),
    }


def distributed_steps() -> Config:
    """``initialize`` and ``finalize`` of the multi-GPU configs: the backend follows the device."""
    return {
        "initialize": [
            "$import torch.distributed as dist",
            (
                "$dist.is_initialized() or "
                "dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')"
            ),
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=0)",
        ],
        "finalize": [
            "$dist.is_initialized() and dist.barrier()",
            "$dist.is_initialized() and dist.destroy_process_group()",
        ],
    }


def rank0(section: str) -> str:
    """Every rank's handlers of ``section``, plus its rank-0 handlers on rank 0."""
    return f"$@{section}#handlers + (@{section}#rank0_handlers if dist.get_rank() == 0 else [])"


def validation_sampler() -> Config:
    """Splits validation over the ranks; pads only when there are fewer cases than ranks."""
    return target(
        "DistributedSampler",
        dataset="@validate#dataset",
        even_divisible="$len(@validate#dataset) < dist.get_world_size()",
        shuffle=False,
    )


def multi_gpu_train() -> Config:
    """``multi_gpu_train.json`` (on top of ``train.json``), for ``torchrun``."""
    steps = distributed_steps()
    return {
        "device": RANK_DEVICE,
        "network": target(
            "torch.nn.parallel.DistributedDataParallel",
            module="$@network_def.to(@device)",
            device_ids="$[@device] if torch.cuda.is_available() else None",
        ),
        "train#sampler": target("DistributedSampler", dataset="@train#dataset", even_divisible=True, shuffle=True),
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": rank0("train"),
        "validate#sampler": validation_sampler(),
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": rank0("validate"),
        "initialize": steps["initialize"],
        "run": ["$@train#trainer.run()"],
        "finalize": steps["finalize"],
    }


def multi_gpu_evaluate() -> Config:
    """``multi_gpu_evaluate.json`` (on top of ``train.json`` and ``evaluate.json``), for ``torchrun``: the test cases
    are split over the ranks, the metrics gathered, and rank 0 writes ``eval/``."""
    steps = distributed_steps()
    return {
        "device": RANK_DEVICE,
        "validate#sampler": validation_sampler(),
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": rank0("validate"),
        "initialize": steps["initialize"],
        "run": ["$@validate#evaluator.run()"],
        "finalize": [CLOSE_TRACKING, *steps["finalize"]],
    }
