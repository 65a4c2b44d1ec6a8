"""Click-guided (DeepEdit) Rep3D: the transforms MONAI's ``monai.apps.deepedit`` lacks for resampling bundles
(:class:`GuidanceToImageGridd`) and keeps stable across MONAI versions (:class:`LabelNamesd`).

The DeepEdit bundles (``bundles/amos_ct_deepedit``, ``bundles/kits_deepedit``) use MONAI's DeepEdit transforms
and ``Interaction`` for everything else; see ``docs/interactive.md``.
"""

from rep3d_networks.deepedit.transforms import GuidanceToImageGridd, LabelNamesd, map_points

__all__ = ["GuidanceToImageGridd", "LabelNamesd", "map_points"]
