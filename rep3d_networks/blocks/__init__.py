"""Building blocks of the Rep3D and 3D UX-Net networks."""

from rep3d_networks.blocks.layernorm import LayerNormChannelsFirst
from rep3d_networks.blocks.receptive_mask import GENERATOR_NORM_AFFINE, LRBM, MaskGenerator, ReceptivePrior
from rep3d_networks.blocks.rep3d_block import Rep3DBlock
from rep3d_networks.blocks.reparam_conv import REPARAM_MODES, ReparamDepthwiseConv3d
from rep3d_networks.blocks.reparam_form import FORM_KEY
from rep3d_networks.blocks.uxnet_block import UXNetBlock
