"""Segmentation networks."""

from rep3d_networks.nets.rep3d import Rep3D
from rep3d_networks.nets.uxnet import UXNet

__all__ = ["Rep3D", "UXNet"]
