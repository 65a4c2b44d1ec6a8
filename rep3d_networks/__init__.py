"""Rep3D: 3D large-kernel segmentation with learnable receptive-field re-parameterization (LRBM).

Public API: :class:`Rep3D`, :class:`UXNet`, :class:`LRBM`, :class:`GeneratorConfig`, :func:`fold`,
:func:`mark_folded`, :func:`dwconv3d`, :func:`csla_param_groups`.
"""

from rep3d_networks.blocks import LRBM, GeneratorConfig, ReparamDepthwiseConv3d
from rep3d_networks.fold import fold, mark_folded
from rep3d_networks.nets import Rep3D, UXNet
from rep3d_networks.ops import dwconv3d
from rep3d_networks.optim import csla_param_groups

__all__ = [
    "LRBM",
    "GeneratorConfig",
    "Rep3D",
    "ReparamDepthwiseConv3d",
    "UXNet",
    "csla_param_groups",
    "dwconv3d",
    "fold",
    "mark_folded",
]
__version__ = "0.1.0"
