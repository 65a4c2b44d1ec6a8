"""Moved to :mod:`rep3d_networks.nets.rep3d`; this module keeps the old import path working."""

import warnings

from rep3d_networks.nets.rep3d import HierarchicalEncoder  # noqa: F401

warnings.warn("rep3d_networks.nets.encoder moved to rep3d_networks.nets.rep3d.", DeprecationWarning, stacklevel=2)
