"""Click-guided (DeepEdit) Rep3D: the transforms MONAI's ``monai.apps.deepedit`` lacks for resampling bundles
(:class:`GuidanceToImageGridd`), keeps stable across MONAI versions (:class:`LabelNamesd`) and needs for more than
one simulated interaction (:class:`GuidanceListsd`), and training iterations in which only the clicks tell the organs
apart (:class:`PermutedLabelInteraction`).

The DeepEdit bundles (``bundles/amos_ct_deepedit``, ``bundles/kits_deepedit``) use MONAI's DeepEdit transforms
and ``Interaction`` for everything else; see ``docs/interactive.md``.
"""

from rep3d_networks.deepedit.interaction import PermutedLabelInteraction, permute_organs
from rep3d_networks.deepedit.transforms import GuidanceListsd, GuidanceToImageGridd, LabelNamesd, map_points

__all__ = [
    "GuidanceListsd",
    "GuidanceToImageGridd",
    "LabelNamesd",
    "PermutedLabelInteraction",
    "map_points",
    "permute_organs",
]
