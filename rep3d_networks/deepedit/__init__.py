"""Click-guided (DeepEdit) Rep3D: the one transform MONAI's ``monai.apps.deepedit`` lacks for resampling bundles.

The DeepEdit bundles (``bundles/amos_ct_deepedit``, ``bundles/kits_deepedit``) use MONAI's DeepEdit transforms
and ``Interaction`` for everything else; see ``docs/interactive.md``.
"""

from rep3d_networks.deepedit.transforms import GuidanceToImageGridd, map_points

__all__ = ["GuidanceToImageGridd", "map_points"]
