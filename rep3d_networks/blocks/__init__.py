"""Building blocks of the Rep3D and 3D UX-Net networks: the LRBM and its re-parameterized convolution (``lrbm``),
the ``reparam_state`` entry of their state dicts (``reparam_state``) and a channels-first LayerNorm (``layernorm``)."""

import importlib
import warnings

from rep3d_networks.blocks.layernorm import LayerNormChannelsFirst
from rep3d_networks.blocks.lrbm import LRBM, GeneratorConfig, MaskGenerator, ReceptivePrior, ReparamDepthwiseConv3d
from rep3d_networks.blocks.reparam_state import FORM_KEY, GENERATOR_NORM_AFFINE, REPARAM_MODES

__all__ = [
    "FORM_KEY",
    "GENERATOR_NORM_AFFINE",
    "LRBM",
    "REPARAM_MODES",
    "GeneratorConfig",
    "LayerNormChannelsFirst",
    "MaskGenerator",
    "ReceptivePrior",
    "ReparamDepthwiseConv3d",
]

_MOVED_TO_NETS = {"Rep3DBlock": "rep3d_networks.nets.rep3d", "UXNetBlock": "rep3d_networks.nets.uxnet"}


def __getattr__(name: str):
    """``Rep3DBlock`` and ``UXNetBlock`` moved beside their networks; imported on first use (``nets`` imports this
    package, so importing them here eagerly would be circular)."""
    if name not in _MOVED_TO_NETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"rep3d_networks.blocks.{name} moved to {_MOVED_TO_NETS[name]}.", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED_TO_NETS[name]), name)
