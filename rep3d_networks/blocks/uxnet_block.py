"""Moved to :mod:`rep3d_networks.nets.uxnet`; this module keeps the old import path working."""

import warnings

from rep3d_networks.nets.uxnet import UXNetBlock  # noqa: F401

warnings.warn("rep3d_networks.blocks.uxnet_block moved to rep3d_networks.nets.uxnet.", DeprecationWarning, stacklevel=2)
