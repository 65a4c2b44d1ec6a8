"""Moved to :mod:`rep3d_networks.blocks.lrbm`; this module keeps the old import path working."""

import warnings

from rep3d_networks.blocks.lrbm import DepthwiseConv3d  # noqa: F401

warnings.warn(
    "rep3d_networks.blocks.depthwise_conv moved to rep3d_networks.blocks.lrbm.", DeprecationWarning, stacklevel=2
)
