"""Old import paths of the network code (before issue #28 put each network family and the LRBM in one file) give
the same objects as the new ones, with a ``DeprecationWarning`` that names the new module."""

import importlib
import re
import sys

import pytest

# (old module, names it exported, module they live in now)
MOVED = [
    (
        "rep3d_networks.blocks.receptive_mask",
        ["tap_distance", "ReceptivePrior", "generator_norm", "MaskGenerator", "LRBM", "GENERATOR_NORM_AFFINE"],
        "rep3d_networks.blocks.lrbm",
    ),
    ("rep3d_networks.blocks.receptive_mask", ["GENERATOR_CHANNELS"], "rep3d_networks.blocks.reparam_state"),
    ("rep3d_networks.blocks.depthwise_conv", ["DepthwiseConv3d"], "rep3d_networks.blocks.lrbm"),
    ("rep3d_networks.blocks.reparam_conv", ["ReparamDepthwiseConv3d", "REPARAM_MODES"], "rep3d_networks.blocks.lrbm"),
    ("rep3d_networks.blocks.reparam_conv", ["OWN_KEYS", "V0_1_FIXED_WARNING"], "rep3d_networks.blocks.reparam_state"),
    (
        "rep3d_networks.blocks.reparam_form",
        ["FORM_KEY", "FORM_VERSION", "FORM_FIELDS", "CHOICES", "GENERATOR_FIELDS", "REPARAM_MODES", "module_form"]
        + ["encode_form", "decode_form", "describe", "mismatches"],
        "rep3d_networks.blocks.reparam_state",
    ),
    ("rep3d_networks.blocks.rep3d_block", ["Rep3DBlock"], "rep3d_networks.nets.rep3d"),
    ("rep3d_networks.blocks.uxnet_block", ["UXNetBlock"], "rep3d_networks.nets.uxnet"),
    ("rep3d_networks.nets.encoder", ["HierarchicalEncoder"], "rep3d_networks.nets.rep3d"),
    ("rep3d_networks.nets.decoder", ["UnetrDecoder"], "rep3d_networks.nets.rep3d"),
    ("rep3d_networks.nets.encoder_decoder", ["LargeKernelEncoderDecoder"], "rep3d_networks.nets.rep3d"),
    ("rep3d_networks.nets.shape", ["check_spatial_shape"], "rep3d_networks.nets.rep3d"),
]

LRBM_MODULE, STATE_MODULE = "rep3d_networks.blocks.lrbm", "rep3d_networks.blocks.reparam_state"
# (package, names it still exports without a warning, module they live in)
PACKAGE_NAMES = [
    ("rep3d_networks", ["LRBM", "ReparamDepthwiseConv3d", "GeneratorConfig"], "rep3d_networks.blocks.lrbm"),
    ("rep3d_networks", ["Rep3D"], "rep3d_networks.nets.rep3d"),
    ("rep3d_networks", ["UXNet"], "rep3d_networks.nets.uxnet"),
    ("rep3d_networks", ["fold", "mark_folded"], "rep3d_networks.fold"),
    ("rep3d_networks", ["dwconv3d"], "rep3d_networks.ops.dwconv"),
    ("rep3d_networks.ops", ["dwconv3d", "_choose_method"], "rep3d_networks.ops.dwconv"),
    ("rep3d_networks.ops", ["_fast_len"], "rep3d_networks.ops.fft"),
    ("rep3d_networks.blocks", ["LRBM", "MaskGenerator", "ReceptivePrior", "ReparamDepthwiseConv3d"], LRBM_MODULE),
    ("rep3d_networks.blocks", ["FORM_KEY", "GENERATOR_NORM_AFFINE", "REPARAM_MODES"], STATE_MODULE),
    ("rep3d_networks.blocks", ["LayerNormChannelsFirst"], "rep3d_networks.blocks.layernorm"),
]


@pytest.mark.parametrize("old,names,new", MOVED, ids=[f"{old}->{new}" for old, _, new in MOVED])
def test_old_module_gives_the_moved_objects_with_a_deprecation_warning(old, names, new):
    sys.modules.pop(old, None)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=re.escape(old) + " moved to"):
        module = importlib.import_module(old)
    for name in names:
        assert getattr(module, name) is getattr(importlib.import_module(new), name), name


@pytest.mark.parametrize("package,names,home", PACKAGE_NAMES, ids=[f"{p}.{n[0]}" for p, n, _ in PACKAGE_NAMES])
def test_package_exports_are_the_moved_objects(package, names, home):
    for name in names:
        assert getattr(importlib.import_module(package), name) is getattr(importlib.import_module(home), name), name


@pytest.mark.parametrize(
    "name,home",
    [("Rep3DBlock", "rep3d_networks.nets.rep3d"), ("UXNetBlock", "rep3d_networks.nets.uxnet")],
    ids=["Rep3DBlock", "UXNetBlock"],
)
def test_blocks_package_still_gives_the_network_blocks(name, home):
    from rep3d_networks import blocks

    with pytest.warns(DeprecationWarning, match=re.escape(f"moved to {home}")):
        assert getattr(blocks, name) is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError, match="NoSuchBlock"):
        blocks.NoSuchBlock
