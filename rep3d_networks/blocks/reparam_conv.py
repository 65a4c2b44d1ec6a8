"""Moved to :mod:`rep3d_networks.blocks.lrbm` (its state-dict loading to :mod:`rep3d_networks.blocks.reparam_state`);
this module keeps the old import path working."""

import warnings

from rep3d_networks.blocks.lrbm import REPARAM_MODES, ReparamDepthwiseConv3d  # noqa: F401
from rep3d_networks.blocks.reparam_state import OWN_KEYS, V0_1_FIXED_WARNING  # noqa: F401

warnings.warn(
    "rep3d_networks.blocks.reparam_conv moved to rep3d_networks.blocks.lrbm.", DeprecationWarning, stacklevel=2
)
