"""Fold a trained network for inference: bake every re-parameterized kernel into a plain depthwise kernel."""

from typing import Dict

import torch
from torch import nn

from rep3d_networks.blocks.lrbm import ReparamDepthwiseConv3d
from rep3d_networks.blocks.reparam_state import FORM_KEY, encode_form, module_form


def fold(model: nn.Module) -> nn.Module:
    """Folds ``model`` in place and returns it.

    Every :class:`ReparamDepthwiseConv3d` gets ``weight ← W_eff`` (``W ⊙ M`` for LRBM/fixed, ``W + pad(W_s)`` for
    CSLA), loses its mask generator, prior and small branch, and marks its ``reparam_state`` entry folded. Eval
    outputs are unchanged; the state dict then loads into the same network built with ``deploy=True`` (and is
    refused by the training form). Folding twice is a no-op.
    """
    for module in model.modules():
        if isinstance(module, ReparamDepthwiseConv3d):
            module.fold()
    return model


def mark_folded(state_dict: Dict[str, torch.Tensor], model: nn.Module, folded: bool = True) -> Dict[str, torch.Tensor]:
    """A copy of a rep3d_networks 0.1 ``state_dict`` with the ``reparam_state`` entries that 0.1 did not write.

    Only needed for 0.1 state dicts of ``reparam="fixed"`` networks saved after :func:`fold`: their keys are those
    of the training form, which is how a 0.1 ``fixed`` state dict is read otherwise. The entries describe
    ``model``'s re-parameterized convolutions (the network the state dict is for) with the given ``folded`` flag.

    Raises:
        ValueError: if ``state_dict`` already has ``reparam_state`` entries, or ``model`` has LRBM/CSLA kernels
            (whose 0.1 keys already tell the two forms apart).
    """
    if any(k.split(".")[-1] == FORM_KEY for k in state_dict):
        raise ValueError(f"the state dict already has {FORM_KEY} entries: load it as it is.")
    marked = dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, ReparamDepthwiseConv3d):
            if module.reparam in ("lrbm", "csla"):
                raise ValueError(
                    f"{name}: reparam={module.reparam!r} state dicts of 0.1 say by their keys whether they are folded."
                )
            marked[f"{name}.{FORM_KEY}" if name else FORM_KEY] = encode_form(module_form(module.training_form, folded))
    return marked
