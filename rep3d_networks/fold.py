"""Fold a trained network for inference: bake every re-parameterized kernel into a plain depthwise kernel."""

from torch import nn

from rep3d_networks.blocks.reparam_conv import ReparamDepthwiseConv3d


def fold(model: nn.Module) -> nn.Module:
    """Folds ``model`` in place and returns it.

    Every :class:`ReparamDepthwiseConv3d` gets ``weight ← W_eff`` (``W ⊙ M`` for LRBM/fixed, ``W + pad(W_s)`` for
    CSLA) and loses its mask generator, prior and small branch. Eval outputs are unchanged; the state dict then
    loads into the same network built with ``deploy=True``. Folding twice is a no-op.
    """
    for module in model.modules():
        if isinstance(module, ReparamDepthwiseConv3d):
            module.fold()
    return model
