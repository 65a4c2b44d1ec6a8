"""``rep3d_networks.reliability``, the old home of the transforms and checkpoint handlers: every old import path
still gives the object at its new home, with a ``DeprecationWarning``."""

import importlib

import pytest

# (old module, name, new module): every name the old modules defined
MOVED = [
    *[
        ("rep3d_networks.reliability", name, "rep3d_networks.transforms")
        for name in (
            "InvertToLabelsd",
            "LoadVolumed",
            "Spacingd",
            "ValidateVolumed",
            "VolumeError",
            "background_outside_crop",
            "check_finite",
            "check_geometry",
            "check_label_values",
            "check_same_grid",
            "check_volume",
            "describe_load_error",
            "find_volume_error",
            "load_volume",
            "output_root",
            "volume_error_message",
        )
    ],
    *[
        ("rep3d_networks.reliability", name, "rep3d_networks.handlers")
        for name in ("AtomicCheckpointSaver", "AtomicDiskSaver", "ResumeCheckpointLoader", "resume_checkpoint")
    ],
    *[
        ("rep3d_networks.reliability.checkpoint", name, "rep3d_networks.handlers.checkpoint")
        for name in (
            "BEST_METRIC_KEYS",
            "FALSE",
            "TRUE",
            "AtomicCheckpointSaver",
            "AtomicDiskSaver",
            "ResumeCheckpointLoader",
            "checkpoint_iteration",
            "nan_ranks_last",
            "resume_checkpoint",
        )
    ],
    *[
        ("rep3d_networks.reliability.checks", name, "rep3d_networks.transforms.checks")
        for name in (
            "SPACING_RANGE_MM",
            "canonical_grid",
            "check_finite",
            "check_geometry",
            "check_label_values",
            "check_same_grid",
            "check_volume",
            "grid_distance_mm",
            "shape_text",
            "voxel_spacing",
            "warn_if_empty",
        )
    ],
    *[
        ("rep3d_networks.reliability.errors", name, "rep3d_networks.transforms.errors")
        for name in ("VolumeError", "find_volume_error", "volume_error_message")
    ],
    *[
        ("rep3d_networks.reliability.loading", name, "rep3d_networks.transforms.loading")
        for name in ("FORMATS", "describe_load_error", "gzip_problem", "load_volume")
    ],
    *[
        ("rep3d_networks.reliability.outputs", name, "rep3d_networks.transforms.outputs")
        for name in ("LABEL_INTERP", "InvertToLabelsd", "background_outside_crop", "output_root", "single_precision")
    ],
    ("rep3d_networks.reliability.transforms", "LoadVolumed", "rep3d_networks.transforms.loading"),
    ("rep3d_networks.reliability.transforms", "nifti_header_geometry", "rep3d_networks.transforms.loading"),
    ("rep3d_networks.reliability.transforms", "ValidateVolumed", "rep3d_networks.transforms.validation"),
    ("rep3d_networks.reliability.transforms", "source_name", "rep3d_networks.transforms.validation"),
    ("rep3d_networks.reliability.transforms", "Spacingd", "rep3d_networks.transforms.spatial"),
]


@pytest.mark.parametrize("old, name, new", MOVED)
def test_old_path_gives_the_moved_object(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", sorted({old for old, _, _ in MOVED}))
def test_old_module_warns(old):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match="moved to"):
        importlib.reload(module)
